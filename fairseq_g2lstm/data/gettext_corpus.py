"""A real German->English parallel corpus with no download: the installed gettext catalogs.

Every ``LOCALE_DIR/de*/LC_MESSAGES/*.mo`` pairs English messages (msgid, the target) with
their German translations (msgstr, the source). User-interface strings are not prose, so
the pairs are cleaned: keyboard accelerators removed, whitespace collapsed, and pairs
dropped (and counted by reason) when they are untranslated, mostly format placeholders,
empty, untranslated copies, too long, or duplicates. The split is by a hash of the English
side, so it is deterministic and one English message never straddles two splits.

When no catalog exists, a seeded synthetic corpus is written instead, with a loud warning.

Usage::

    python -m fairseq_g2lstm.data.gettext_corpus --out corpus/gettext.de-en
"""
import argparse
import hashlib
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from . import synthetic_corpus
from .atomic_dir import atomic_output_dir
from ..cli_args import OneLineParser, split_fraction
from .errors import PrepareError, reports_errors
from .filters import normalize
from .mo_catalog import CatalogEntry, CatalogFormatError, read_catalog
from .textio import PairWriter, write_json

SOURCE_LANG, TARGET_LANG = "de", "en"
DEFAULT_LOCALE_DIR = Path("/usr/share/locale")
MAX_WORDS = 50
MANIFEST = "manifest.json"
SPLITS = ("train", "valid", "test")
SYNTHETIC_PAIRS = 20000

_ACCELERATOR_UNDERSCORE = re.compile(r"_(?=\w)")
_ACCELERATOR_AMPERSAND = re.compile(r"(?<![\w&])&(?=[^\W\d_])(?!\w+;)")
"""Qt/KDE style ``&File``; ``AT&T``, ``&&`` and entities like ``&lt;`` are left alone."""
_ENTITY = {"&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'", "&amp;": "&"}
_ENTITY_PATTERN = re.compile("|".join(map(re.escape, _ENTITY)))
_PLACEHOLDER = re.compile(
    r"%%"  # a literal percent sign, matched first so that it is not taken for a placeholder
    r"|%(?:\d+\$)?[-+#0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|ll|[hlLqjzZt])?[diouxXeEfFgGaAcspm]"  # printf
    r"|%<PRI\w+>"  # gettext's portable integer formats
    r"|%\(\w+\)[sdifr]"  # Python
    r"|\{\w*\}"  # str.format and glib
)
_LETTER = re.compile(r"[^\W\d_]")

Pair = Tuple[str, str]
"""(German source, English target)"""


def catalog_paths(locale_dir: Path, language: str = SOURCE_LANG) -> List[Path]:
    """Catalogs of ``language`` and its regional variants (``de``, ``de_DE``, ``de_CH``...)."""
    folders = [locale_dir / language, *sorted(locale_dir.glob(f"{language}_*"))]
    return [path for folder in folders for path in sorted((folder / "LC_MESSAGES").glob("*.mo"))]


def message_pairs(entry: CatalogEntry) -> Iterator[Tuple[str, str]]:
    """(English, German) for each form: singular with singular, plural with the first
    plural form; further German plural forms have no English counterpart."""
    return zip(entry.msgids, entry.msgstrs)


def strip_accelerators(english: str, german: str) -> Tuple[str, str]:
    """Remove GTK ``_`` and Qt ``&`` mnemonic markers.

    An underscore is taken for a mnemonic only when each side has exactly one before a
    word character and the marked words differ: ``Pro_perties``/``_Eigenschaften`` lose it,
    while identifiers such as ``pg_database`` (copied verbatim) or ``column_type`` (no
    underscore in the translation) keep theirs.
    """
    english, german = (_ACCELERATOR_AMPERSAND.sub("", text) for text in (english, german))
    marked = [_ACCELERATOR_UNDERSCORE.findall(text) for text in (english, german)]
    if [len(found) for found in marked] != [1, 1]:
        return english, german
    english_words, german_words = (set(re.findall(r"\w*_\w+", text)) for text in (english, german))
    if english_words & german_words:
        return english, german
    return _ACCELERATOR_UNDERSCORE.sub("", english, 1), _ACCELERATOR_UNDERSCORE.sub("", german, 1)


def placeholders_dominate(text: str) -> bool:
    """True when format placeholders are at least as many as the words with letters.

    printf's space flag is not recognised: ``50% done`` is prose far more often than
    ``% d`` is a conversion.
    """
    placeholders = sum(1 for found in _PLACEHOLDER.findall(text) if found != "%%")
    words = sum(1 for token in _PLACEHOLDER.sub(" ", text).split() if _LETTER.search(token))
    return placeholders >= words


def clean_message(english: str, german: str, dropped: Counter) -> Optional[Pair]:
    """A cleaned (German, English) pair, or ``None`` with the reason counted."""
    if not german.strip():
        reason = "untranslated"
    elif "\ufffd" in english or "\ufffd" in german:
        reason = "undecodable"
    else:
        english, german = strip_accelerators(english, german)
        english, german = (normalize(_ENTITY_PATTERN.sub(lambda m: _ENTITY[m.group()], text))
                           for text in (english, german))  # fmt: skip
        if not english or not german:
            reason = "empty"
        elif placeholders_dominate(english) or placeholders_dominate(german):
            reason = "placeholders"
        elif english == german:
            reason = "identical"
        elif max(len(english.split()), len(german.split())) > MAX_WORDS:
            reason = "too_long"
        else:
            return german, english
    dropped[reason] += 1
    return None


def collect_pairs(paths: Sequence[Path], counts: Counter, dropped: Counter) -> List[Pair]:
    """Cleaned, deduplicated pairs of all catalogs, in sorted order."""
    pairs = set()
    for path in paths:
        try:
            entries = list(read_catalog(path))
        except CatalogFormatError as error:
            print(f"warning: skipping {error}", file=sys.stderr)
            continue
        counts["catalogs"] += 1
        counts["entries"] += len(entries)
        for entry in entries:
            for english, german in message_pairs(entry):
                counts["message_pairs"] += 1
                pair = clean_message(english, german, dropped)
                if pair is None:
                    continue
                if pair in pairs:
                    dropped["duplicate"] += 1
                pairs.add(pair)
    return sorted(pairs)


def _hash_fraction(text: str) -> float:
    """A stable pseudo-random number in [0, 1) for ``text``."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big") / 2**64


def split_pairs(
    pairs: Iterable[Pair], valid_fraction: float, test_fraction: float
) -> Dict[str, List[Pair]]:
    """Assign by a hash of the lowercased English side; each split in hash order, so that
    neighbouring lines do not come from the same catalog."""
    keyed = sorted((_hash_fraction(english.lower()), german, english) for german, english in pairs)
    splits: Dict[str, List[Pair]] = {split: [] for split in SPLITS}
    for fraction, german, english in keyed:
        if fraction < test_fraction:
            split = "test"
        elif fraction < test_fraction + valid_fraction:
            split = "valid"
        else:
            split = "train"
        splits[split].append((german, english))
    return splits


def build_corpus(
    locale_dir: Path,
    out: Path,
    force: bool = False,
    valid_fraction: float = 0.02,
    test_fraction: float = 0.02,
    allow_synthetic: bool = True,
) -> dict:
    """Write ``out/{train,valid,test}.{de,en}`` and ``out/manifest.json``; return the manifest.

    Without usable catalogs the corpus is synthetic when ``allow_synthetic`` (the
    command line allows it for the default locale folder only: a folder the user names
    must hold catalogs), else a :class:`PrepareError`; so is an empty train split.
    """
    paths = catalog_paths(Path(locale_dir))
    counts, dropped = Counter(), Counter()
    pairs = collect_pairs(paths, counts, dropped)
    source = "gettext"
    if not pairs and not allow_synthetic:
        raise PrepareError(f"{locale_dir}: no German gettext catalogs (de*/LC_MESSAGES/*.mo) with usable messages")
    if not pairs:
        source = "synthetic"
        print(
            f"WARNING: no German gettext catalogs with usable messages under {locale_dir}.\n"
            f"WARNING: writing a SYNTHETIC corpus of {SYNTHETIC_PAIRS} generated pairs instead; "
            "it is not real translation data.",
            file=sys.stderr,
            flush=True,
        )
        pairs = sorted(set(synthetic_corpus.generate_pairs(SYNTHETIC_PAIRS, seed=1)))
    splits = split_pairs(pairs, valid_fraction, test_fraction)
    if not splits["train"]:
        raise PrepareError(f"the train split is empty: {len(pairs)} pairs, --valid-fraction {valid_fraction:g}, "
                           f"--test-fraction {test_fraction:g}")
    manifest = {
        "source": source,
        "locale_dir": str(locale_dir),
        **counts,
        "dropped": dict(sorted(dropped.items())),
        "kept": len(pairs),
        "splits": {split: len(split_pairs_) for split, split_pairs_ in splits.items()},
    }
    with atomic_output_dir(Path(out), force) as staging:
        for split, split_pairs_ in splits.items():
            with PairWriter(staging / split, SOURCE_LANG, TARGET_LANG) as writer:
                for german, english in split_pairs_:
                    writer.write(german, english)
        write_json(staging / MANIFEST, manifest)
    return manifest


PROG = "g2lstm-build-gettext-corpus"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="German->English parallel text from the installed gettext catalogs.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for {train,valid,test}.{de,en}")
    parser.add_argument("--locale-dir", type=Path,
                        help=f"where the de*/LC_MESSAGES/*.mo catalogs are (default {DEFAULT_LOCALE_DIR}; only "
                             "there, when it has none, is a synthetic corpus written instead)")
    parser.add_argument("--valid-fraction", type=split_fraction, default=0.02, metavar="F",
                        help="share of the pairs for the valid split (default %(default)s)")
    parser.add_argument("--test-fraction", type=split_fraction, default=0.02, metavar="F",
                        help="share of the pairs for the test split (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    return parser  # fmt: skip


@reports_errors(PROG)
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.valid_fraction + args.test_fraction >= 1:
        parser.error(f"--valid-fraction {args.valid_fraction:g} and --test-fraction {args.test_fraction:g} "
                     "leave nothing for the train split; together they must stay below 1")
    if args.locale_dir is not None and not args.locale_dir.is_dir():
        parser.error(f"--locale-dir {args.locale_dir}: no such folder")
    locale_dir = DEFAULT_LOCALE_DIR if args.locale_dir is None else args.locale_dir
    manifest = build_corpus(locale_dir, args.out, args.force, args.valid_fraction, args.test_fraction,
                            allow_synthetic=args.locale_dir is None)
    print(f"| {manifest['source']} corpus in {args.out}: {manifest['kept']} pairs, "
          f"splits {manifest['splits']}")  # fmt: skip
    if manifest["source"] == "gettext":
        print(f"| {manifest['catalogs']} catalogs, {manifest['message_pairs']} messages, "
              f"dropped {manifest['dropped']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
