# The paper's translation experiments (docs/paper.md), shared by examples/iwslt14/run.sh and
# examples/wmt14/run.sh, which set the dataset's variables and call `paper_recipe`:
#   prepare the official archives -> train plain, sharpened and G2 models with identical
#   flags -> beam-5 sacreBLEU -> the compression table -> the gate histograms.
# The training flags (architecture, optimiser, batch, stopping rule) are the project's
# recipe for the dataset's scale, read from fairseq_g2lstm/data/next_commands.py, the one
# place they are stated (docs/recipes.md).
#
# What a dataset script sets:
#   DATASET (iwslt14 or wmt14: also the recipe's name), PREPARE (the g2lstm-prepare-*
#   command, without --destdir), SRC, TGT
# Knobs (environment; defaults are the full recipe):
#   OUT            work folder (default work/$DATASET)
#   ARMS           gate modes to train (default "plain sharpened gumbel")
#   SEEDS          seeds per arm (default "1": the paper reports one run each)
#   EPOCHS         epoch cap, instead of the recipe's (30 for iwslt14, 10 for wmt14)
#   DEVICE_ARGS    extra flags for every fairseq command, e.g. "--cpu"
#   TRAIN_ARGS     extra fairseq-train flags for every arm alike, e.g. "--max-update 4";
#                  they come after the recipe's, so they override them
#   GEN_ARGS       extra fairseq-generate flags (default "--batch-size 128")
#   RANKS          SVD ranks of the compression table (default "32 16")
#   GATE_SENTENCES training pairs for the gate histograms (default 10000)
#   TIME_STEPS     if set: train only that many updates of the G2 arm, print the measured
#                  step time and the projected training time, and stop
set -euo pipefail

recipe_stage() { printf '\n== [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# recipe_value FLAG WORDS...: the word after FLAG in WORDS
recipe_value() {
    local flag=$1; shift
    while [ $# -gt 1 ]; do [ "$1" = "$flag" ] && { echo "$2"; return; }; shift; done
    return 1
}

paper_recipe() {
    local repo out arms seeds data
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    out=${OUT:-work/$DATASET}
    arms=${ARMS:-plain sharpened gumbel}
    seeds=${SEEDS:-1}
    data="$out/data-bin"
    local device=(${DEVICE_ARGS:-}) train_extra=(${TRAIN_ARGS:-}) gen_extra=(${GEN_ARGS:---batch-size 128})
    local langs=(--source-lang "$SRC" --target-lang "$TGT")
    local recipe_flags recipe epochs
    recipe_flags=$(python "$repo/fairseq_g2lstm/data/next_commands.py" "$DATASET")
    read -ra recipe <<< "$recipe_flags"
    epochs=${EPOCHS:-$(recipe_value --max-epoch "${recipe[@]}")}

    recipe_stage "1. prepare $DATASET into $data"
    if [ ! -f "$data/manifest.json" ]; then
        $PREPARE --destdir "$data" --force
    fi

    local train=(fairseq-train "$data" --user-dir "$repo/fairseq_g2lstm" "${langs[@]}" "${recipe[@]}"
                 --max-epoch "$epochs" --no-epoch-checkpoints --log-format simple --log-interval 100
                 "${device[@]}" "${train_extra[@]}")

    if [ -n "${TIME_STEPS:-}" ]; then
        recipe_stage "timing $TIME_STEPS updates of the G2 arm"
        python "$repo/examples/step_time.py" --steps "$TIME_STEPS" --epochs "$epochs" -- \
            "${train[@]}" --gate-mode gumbel --save-dir "$out/timing" --no-save
        return
    fi

    local checkpoints=() labels=()
    for seed in $seeds; do
        for arm in $arms; do
            local name="$arm-seed$seed"
            recipe_stage "2. train $name"
            if [ ! -f "$out/checkpoints/$name/trained" ]; then
                "${train[@]}" --gate-mode "$arm" --seed "$seed" --save-dir "$out/checkpoints/$name"
                touch "$out/checkpoints/$name/trained"
            fi
            checkpoints+=("$out/checkpoints/$name/checkpoint_best.pt")
            labels+=("$name")
        done
    done

    recipe_stage "3. BLEU and the compression table (original, round, round-clip, SVD ${RANKS:-32 16})"
    python "$repo/scripts/compression_sweep.py" "$data" "${checkpoints[@]}" --labels "${labels[@]}" \
        --ranks ${RANKS:-32 16} --gen-args "${langs[*]} --remove-bpe sentencepiece ${gen_extra[*]} ${device[*]}" \
        --json "$out/table4.json" --markdown "$out/table4.md"

    recipe_stage "4. gate statistics and histograms"
    local gates_device=()
    [[ " ${device[*]} " == *" --cpu "* ]] && gates_device=(--cpu)
    g2lstm-gates "$data" --path "${checkpoints[@]}" --labels "${labels[@]}" --out-dir "$out/gates" \
        --max-sentences "${GATE_SENTENCES:-10000}" --no-progress-bar "${gates_device[@]}"

    recipe_stage "done: $out/table4.md, $out/gates/"
    cat "$out/table4.md"
}
