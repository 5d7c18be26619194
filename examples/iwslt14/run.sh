#!/usr/bin/env bash
# The paper's IWSLT14 De->En experiment, end to end (see README.md here):
#   bash examples/iwslt14/run.sh de-en.tgz
# de-en.tgz is the official archive (fairseq's prepare-iwslt14.sh one); with --download as
# the second argument it is fetched first. Knobs: see examples/paper_recipe.sh.
set -euo pipefail
source "$(dirname "$0")/../paper_recipe.sh"

ARCHIVE=${1:?usage: bash examples/iwslt14/run.sh de-en.tgz [--download]}
DATASET=iwslt14   # also the name of the training recipe (docs/recipes.md)
PREPARE="g2lstm-prepare-iwslt14 $ARCHIVE ${2:-} --vocab-size ${VOCAB:-25000} --max-subwords 64"
SRC=de TGT=en
paper_recipe
