#!/usr/bin/env bash
# Training and generation speed through the real CLIs, g2lstm against fairseq's own
# LSTM archs, on one data-bin, one after the other in one run.
#
#   bash benchmarks/cli_speed.sh DATA_BIN [UPDATES] [ARCH[:EXTRA FLAGS] ...]
#
# e.g. "g2lstm_iwslt:--encoder-layers 1 --decoder-layers 1" for the arch with other sizes.
# Each arch trains UPDATES updates (default 200; --max-tokens 2000, Adam, 2 threads,
# the same seed), then fairseq-generate scores the test split with beam 5. The table
# gives fairseq's own figures: the epoch's training words/s (target tokens) and the
# generation sentences/s and tokens/s. Generated lengths differ between models, so
# compare tokens/s as well as sentences/s. Logs and checkpoints go to a temp folder.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${1:?usage: cli_speed.sh DATA_BIN [UPDATES] [ARCH[:FLAGS] ...]}
UPDATES=${2:-200}
shift $(( $# >= 2 ? 2 : 1 ))
ARCHS=("$@")
[ ${#ARCHS[@]} -gt 0 ] || ARCHS=(g2lstm_iwslt lstm_wiseman_iwslt_de_en)
export OMP_NUM_THREADS=${THREADS:-$(nproc)}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

printf '| arch | params | train wps | generate sent/s | generate tok/s | BLEU |\n|---|---:|---:|---:|---:|---:|\n' > "$WORK/table.md"
for spec in "${ARCHS[@]}"; do
    arch=${spec%%:*}
    extra=()
    [[ $spec == *:* ]] && read -r -a extra <<< "${spec#*:}"
    name=$(echo "$spec" | tr -c 'A-Za-z0-9_\n-' '_')
    echo "== $spec: training $UPDATES updates" >&2
    fairseq-train "$DATA" --user-dir fairseq_g2lstm --arch "$arch" "${extra[@]}" --cpu \
        --optimizer adam --lr 0.002 --clip-norm 2.0 --max-tokens 2000 --criterion cross_entropy \
        --max-update "$UPDATES" --seed 1 --save-dir "$WORK/$name" --no-epoch-checkpoints \
        --disable-validation --log-format simple --log-interval 1000 > "$WORK/$name.train.log" 2>&1
    echo "== $spec: generating" >&2
    fairseq-generate "$DATA" --user-dir fairseq_g2lstm --path "$WORK/$name/checkpoint_last.pt" --cpu \
        --beam 5 --max-tokens 8000 --remove-bpe sentencepiece --scoring sacrebleu \
        > "$WORK/$name.gen.txt" 2> "$WORK/$name.gen.log"
    params=$(sed -n 's/.*num. shared model params: \([0-9,]*\).*/\1/p' "$WORK/$name.train.log" | head -n 1)
    wps=$(grep ' | train | ' "$WORK/$name.train.log" | tail -n 1 | sed -n 's/.* | wps \([0-9.]*\) | .*/\1/p')
    speed=$(sed -n 's/.*(\([0-9.]*\) sentences\/s, \([0-9.]*\) tokens\/s).*/\1 | \2/p' "$WORK/$name.gen.log")
    bleu=$(tail -n 1 "$WORK/$name.gen.txt" | sed -n 's/.*BLEU = \([0-9.]*\).*/\1/p')
    echo "| $spec | $params | $wps | $speed | $bleu |" >> "$WORK/table.md"
done
cat "$WORK/table.md"
echo "(DATA=$DATA, $UPDATES updates, $OMP_NUM_THREADS threads, commit $(git rev-parse --short HEAD))"
