"""The model card (``MODEL.md``) of a model folder: what a person needs to know before using
the model, rendered from the same manifest that programs read (``model.json``)."""
import shlex
from typing import Any, Dict, List

from g2lstm_runtime.folder import LANGUAGE_MODEL


def _quote(word: str) -> str:
    return word if word.startswith("$(") else shlex.quote(word)


def model_card(manifest: Dict[str, Any], interactive: List[str]) -> str:
    kind = manifest["kind"]
    gates = manifest["gates"]
    arch = manifest["architecture"]
    if kind == LANGUAGE_MODEL:
        title = f"G2-LSTM language model ({manifest['arch']})"
    else:
        title = f"G2-LSTM translation model {manifest['languages']['source']} -> {manifest['languages']['target']} " \
                f"({manifest['arch']})"
    temperature = gates.get("temperature")
    lines = [
        f"# {title}",
        "",
        "An LSTM whose input and forget gates were trained to be near 0 or 1 (G2-LSTM, Li et al., ICML 2018, "
        "\"Towards Binary-Valued Gates for Robust LSTM Training\"), exported by fairseq-g2lstm.",
        "",
        "## Model",
        "",
        f"- architecture: `{manifest['arch']}`; layers: {arch.get('decoder_layers')}; "
        f"hidden size: {arch.get('decoder_hidden_size')}",
        f"- gates: mode `{gates.get('mode')}`, temperature {temperature if temperature is not None else 'the mode default'}"
        f", noise probability {gates.get('noise_prob')}, evaluated `{gates.get('eval')}`",
        "- vocabulary: " + ", ".join(f"{role} {size:,}" for role, size in manifest["vocabulary"].items()),
        f"- BPE: {manifest['bpe']['name'] + ' (' + manifest['bpe']['file'] + ')' if manifest['bpe'] else 'none'}",
        f"- trained for {manifest['training']['updates']} updates",
    ]
    if manifest.get("compression"):
        lines.append(f"- compressed: `{manifest['compression']}`")
    if manifest.get("averaged_from"):
        lines.append(f"- the average of {len(manifest['averaged_from'])} checkpoints")
    if manifest.get("quantize") not in (None, "none"):
        lines.append(f"- quantized to {manifest['quantize']} when loaded")
    if manifest["data"].get("lowercase"):
        lines.append("- trained on lowercased text: lowercase the input for the best results")
    if manifest.get("bleu"):
        lines.append(f"- BLEU: {manifest['bleu']}")
    lines += ["", "## Use", "", "In Python, from this folder alone:", "", "```python",
              "from fairseq_g2lstm.models import " + ("G2LSTMLanguageModel" if kind == LANGUAGE_MODEL else "G2LSTMModel"),
              "hub = " + ("G2LSTMLanguageModel" if kind == LANGUAGE_MODEL else "G2LSTMModel") + ".from_pretrained(\"THIS_FOLDER\")",
              "print(hub.sample(\"...\"))" if kind == LANGUAGE_MODEL else "print(hub.translate(\"...\"))", "```", ""]
    if kind != LANGUAGE_MODEL:
        lines += ["On the command line, and as an HTTP server (a LibreTranslate-compatible API and a web page):", "",
                  "```sh", " ".join(_quote(word) for word in interactive), "g2lstm-serve THIS_FOLDER", "```", ""]
    if manifest.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in manifest["notes"]] + [""]
    lines += ["## Provenance", "",
              f"- source checkpoint: `{manifest['source_checkpoint']['name']}` "
              f"(sha256 {manifest['source_checkpoint']['sha256'][:16]}...)",
              f"- data prepared by: `{manifest['data']['prepared_by']}`" if manifest["data"].get("prepared_by")
              else "- data preparation: not recorded",
              f"- exported by {manifest['created_by']}; `model.json` lists the sha256 of every file", ""]
    return "\n".join(lines)
