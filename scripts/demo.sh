#!/usr/bin/env bash
# `make demo`: the whole workflow offline, on CPU, in under 15 minutes on 2 cores.
#   1. a German->English corpus from the machine's gettext catalogs (no download);
#   2. joint sentencepiece BPE + fairseq-preprocess;
#   3. fairseq-train --arch g2lstm_iwslt for a fixed number of updates (DEMO_MAX_UPDATE),
#      seeded; the corpus, and so the BLEU, depends on the catalogs the machine has, so the
#      demo prints the corpus's fingerprint beside the BLEU (docs/results.md#the-demo);
#   4. fairseq-generate on the test split: beam 5, sacreBLEU;
#   5. fairseq-interactive on a few sentences.
# Everything lands in demo/ (DEMO_DIR). Run it through `make demo`, which installs first.
# The training settings were chosen by measurement: docs/demo.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_DIR=${DEMO_DIR:-demo}
THREADS=${DEMO_THREADS:-$(nproc)}
# The training length. The learning rate decays linearly to 0 at this update, so a
# different value is a different (complete) schedule, not a cut of the default one.
MAX_UPDATE=${DEMO_MAX_UPDATE:-1200}
# Safety stop only: on a busy machine training ends after this many minutes even if
# MAX_UPDATE is not reached; the demo then says so, and its BLEU is not the reference one.
LIMIT_MINUTES=${DEMO_TIME_LIMIT_MINUTES:-12}
export OMP_NUM_THREADS=$THREADS
start=$(date +%s)
stage() { printf '\n== [%3ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

stage "1/5 building the gettext corpus"
python -m fairseq_g2lstm.data.gettext_corpus --out "$DEMO_DIR/corpus" --force
FINGERPRINT=$(python -m fairseq_g2lstm.data.fingerprint "$DEMO_DIR/corpus")
echo "| $FINGERPRINT"

stage "2/5 sentencepiece + fairseq-preprocess"
python -m fairseq_g2lstm.data.prepare_parallel -s de -t en \
    --trainpref "$DEMO_DIR/corpus/train" --validpref "$DEMO_DIR/corpus/valid" --testpref "$DEMO_DIR/corpus/test" \
    --destdir "$DEMO_DIR/data-bin" --vocab-size 4000 --lowercase --max-subwords 64 --force
SPM=$(ls "$DEMO_DIR"/data-bin/*.model | head -n 1)

stage "3/5 training g2lstm_iwslt for $MAX_UPDATE updates on $THREADS threads (safety stop after $LIMIT_MINUTES min)"
# Adam, peak lr 0.004 after 100 warm-up updates, then linear decay to 0 at MAX_UPDATE;
# label smoothing 0.1; batches of 1,000 tokens; gradient norm clipped at 2.0.
# The model is the paper's G2-LSTM as is (gumbel gates, tau 0.9, p 0.2, dropout 0.2).
rm -rf "$DEMO_DIR/checkpoints"
fairseq-train "$DEMO_DIR/data-bin" --user-dir fairseq_g2lstm --arch g2lstm_iwslt --cpu --seed 1 \
    --optimizer adam --lr 0.004 --clip-norm 2.0 \
    --lr-scheduler polynomial_decay --warmup-updates 100 --total-num-update "$MAX_UPDATE" --end-learning-rate 0 \
    --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --dropout 0.2 --max-tokens 1000 \
    --max-update "$MAX_UPDATE" --stop-time-hours "$(python -c "print($LIMIT_MINUTES / 60)")" \
    --save-dir "$DEMO_DIR/checkpoints" --no-epoch-checkpoints --log-format tqdm --log-interval 20
CKPT="$DEMO_DIR/checkpoints/checkpoint_last.pt"
UPDATES=$(python -c "import sys, torch
print(torch.load(sys.argv[1], map_location='cpu', weights_only=False)['optimizer_history'][-1]['num_updates'])" "$CKPT")
EARLY=""
if [ "$UPDATES" -lt "$MAX_UPDATE" ]; then
    EARLY="WARNING: training hit the ${LIMIT_MINUTES}-minute safety stop after $UPDATES of $MAX_UPDATE updates (busy machine?);
WARNING: the model is not the reference one and its BLEU is lower (docs/results.md#the-demo)."
    printf '\n%s\n' "$EARLY"
fi

stage "4/5 scoring the test split (beam 5, sacreBLEU)"
fairseq-generate "$DEMO_DIR/data-bin" --user-dir fairseq_g2lstm --path "$CKPT" \
    --cpu --beam 5 --max-tokens 8000 --remove-bpe sentencepiece --scoring sacrebleu \
    > "$DEMO_DIR/generate-test.txt" 2> "$DEMO_DIR/generate-test.log"
grep -m 5 '^H-' "$DEMO_DIR/generate-test.txt"
BLEU=$(tail -n 1 "$DEMO_DIR/generate-test.txt")

stage "5/5 translating a few sentences with fairseq-interactive"
SENTENCES=("datei nicht gefunden" "das verzeichnis kann nicht gelesen werden"
           "alle änderungen speichern" "verbindung zum server fehlgeschlagen")
printf '%s\n' "${SENTENCES[@]}" |
fairseq-interactive "$DEMO_DIR/data-bin" --user-dir fairseq_g2lstm --path "$CKPT" \
    --cpu --beam 5 --source-lang de --target-lang en --bpe sentencepiece --sentencepiece-model "$SPM" \
    2> "$DEMO_DIR/interactive.log" | grep '^D-' | cut -f 3 |
paste -d '\t' <(printf '%s\n' "${SENTENCES[@]}") - | sed 's/\t/  ->  /'

stage "done"
echo "$BLEU ($UPDATES of $MAX_UPDATE updates)"
echo "$FINGERPRINT (compare: docs/results.md#the-demo)"
[ -z "$EARLY" ] || echo "$EARLY"
echo "demo wall time: $(( $(date +%s) - start )) s (outputs in $DEMO_DIR/)"
echo
echo "Serve the model (a LibreTranslate-compatible API and a web page at http://127.0.0.1:8000/):"
echo "  g2lstm-export $CKPT --data $DEMO_DIR/data-bin --out /tmp/g2lstm-demo-model --force"
echo "  g2lstm-serve /tmp/g2lstm-demo-model"
