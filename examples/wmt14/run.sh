#!/usr/bin/env bash
# The paper's WMT14 En->De experiment, end to end (see README.md here):
#   bash examples/wmt14/run.sh wmt14-orig/
# wmt14-orig/ holds the official archives (fairseq's prepare-wmt14en2de.sh files); with
# --download as the second argument they are fetched first. Knobs: examples/paper_recipe.sh.
set -euo pipefail
source "$(dirname "$0")/../paper_recipe.sh"

ORIG=${1:?usage: bash examples/wmt14/run.sh wmt14-orig/ [--download]}
DATASET=wmt14     # also the name of the training recipe (docs/recipes.md)
PREPARE="g2lstm-prepare-wmt14 $ORIG ${2:-} --vocab-size ${VOCAB:-32000} --workers ${WORKERS:-8}"
SRC=en TGT=de
paper_recipe
