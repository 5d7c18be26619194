#!/usr/bin/env bash
# `make demo`: the whole workflow offline, on CPU, in well under 15 minutes.
#   1. a German->English corpus from the machine's gettext catalogs (no download);
#   2. joint sentencepiece BPE + fairseq-preprocess;
#   3. fairseq-train --arch g2lstm_iwslt for a bounded time (DEMO_TRAIN_MINUTES, default 8);
#   4. fairseq-generate on the test split: beam 5, sacreBLEU;
#   5. fairseq-interactive on a few sentences.
# Everything lands in demo/ (DEMO_DIR). Run it through `make demo`, which installs first.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_DIR=${DEMO_DIR:-demo}
MINUTES=${DEMO_TRAIN_MINUTES:-8}
THREADS=${DEMO_THREADS:-$(nproc)}
export OMP_NUM_THREADS=$THREADS
start=$(date +%s)
stage() { printf '\n== [%3ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

stage "1/5 building the gettext corpus"
python -m fairseq_g2lstm.data.gettext_corpus --out "$DEMO_DIR/corpus" --force

stage "2/5 sentencepiece + fairseq-preprocess"
python -m fairseq_g2lstm.data.prepare_parallel -s de -t en \
    --trainpref "$DEMO_DIR/corpus/train" --validpref "$DEMO_DIR/corpus/valid" --testpref "$DEMO_DIR/corpus/test" \
    --destdir "$DEMO_DIR/data-bin" --vocab-size 4000 --lowercase --max-subwords 64 --force
SPM=$(ls "$DEMO_DIR"/data-bin/*.model | head -n 1)

stage "3/5 training g2lstm_iwslt for $MINUTES minutes on $THREADS threads"
rm -rf "$DEMO_DIR/checkpoints"
fairseq-train "$DEMO_DIR/data-bin" --user-dir fairseq_g2lstm --arch g2lstm_iwslt \
    --cpu --optimizer adam --lr 0.002 --clip-norm 2.0 --dropout 0.2 \
    --max-tokens 2000 --criterion cross_entropy \
    --stop-time-hours "$(python -c "print($MINUTES / 60)")" --max-epoch 50 \
    --save-dir "$DEMO_DIR/checkpoints" --no-epoch-checkpoints --log-format tqdm --log-interval 20 \
    --seed 1

stage "4/5 scoring the test split (beam 5, sacreBLEU)"
fairseq-generate "$DEMO_DIR/data-bin" --user-dir fairseq_g2lstm --path "$DEMO_DIR/checkpoints/checkpoint_last.pt" \
    --cpu --beam 5 --max-tokens 8000 --remove-bpe sentencepiece --scoring sacrebleu \
    > "$DEMO_DIR/generate-test.txt" 2> "$DEMO_DIR/generate-test.log"
grep -m 5 '^H-' "$DEMO_DIR/generate-test.txt"
BLEU=$(tail -n 1 "$DEMO_DIR/generate-test.txt")

stage "5/5 translating a few sentences with fairseq-interactive"
SENTENCES=("datei nicht gefunden" "das verzeichnis kann nicht gelesen werden"
           "alle änderungen speichern" "verbindung zum server fehlgeschlagen")
printf '%s\n' "${SENTENCES[@]}" |
fairseq-interactive "$DEMO_DIR/data-bin" --user-dir fairseq_g2lstm --path "$DEMO_DIR/checkpoints/checkpoint_last.pt" \
    --cpu --beam 5 --source-lang de --target-lang en --bpe sentencepiece --sentencepiece-model "$SPM" \
    2> "$DEMO_DIR/interactive.log" | grep '^D-' | cut -f 3 |
paste -d '\t' <(printf '%s\n' "${SENTENCES[@]}") - | sed 's/\t/  ->  /'

stage "done"
echo "$BLEU"
echo "demo wall time: $(( $(date +%s) - start )) s (outputs in $DEMO_DIR/)"
