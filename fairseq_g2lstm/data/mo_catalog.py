"""Read compiled gettext catalogs (``.mo``) with the standard library only.

``gettext.GNUTranslations`` would do, but it decodes the header as UTF-8 before it knows
the charset and so rejects some installed catalogs (e.g. ISO-8859-1 ones); reading the
documented binary layout directly is short and handles every catalog the same way.
"""
import codecs
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List

_MAGIC_LITTLE_ENDIAN = 0x950412DE
_MAGIC_BIG_ENDIAN = 0xDE120495
_CONTEXT_SEPARATOR = b"\x04"
_PLURAL_SEPARATOR = b"\x00"
_CHARSET = re.compile(rb"charset=([\w.-]+)", re.IGNORECASE)


class CatalogFormatError(ValueError):
    """The file is not a readable .mo catalog."""


@dataclass(frozen=True)
class CatalogEntry:
    """One message: the English msgid forms and the translated msgstr forms.

    A singular message has one form on each side. A plural message has the singular and
    plural msgid, and one msgstr per plural form of the target language.
    """

    msgids: List[str]
    msgstrs: List[str]


def read_catalog(path: Path) -> Iterator[CatalogEntry]:
    """Yield the entries of a .mo file in file order (sorted by msgid), header skipped.

    Bytes that are invalid in the catalog's charset become U+FFFD, for the caller to judge.
    Message contexts (``context\\x04msgid``) are dropped: the context disambiguates
    identical English strings and is not part of the text.
    """
    data = Path(path).read_bytes()
    if len(data) < 20:
        raise CatalogFormatError(f"{path}: too short for a .mo file")
    (magic,) = struct.unpack("<I", data[:4])
    if magic == _MAGIC_LITTLE_ENDIAN:
        order = "<"
    elif magic == _MAGIC_BIG_ENDIAN:
        order = ">"
    else:
        raise CatalogFormatError(f"{path}: not a .mo file (bad magic number)")
    _revision, count, msgid_table, msgstr_table = struct.unpack(order + "4I", data[4:20])

    def string_at(table: int, index: int) -> bytes:
        length, offset = struct.unpack(order + "2I", data[table + 8 * index : table + 8 * index + 8])
        return data[offset : offset + length]

    raw = [(string_at(msgid_table, i), string_at(msgstr_table, i)) for i in range(count)]
    header = next((msgstr for msgid, msgstr in raw if msgid == b""), b"")
    match = _CHARSET.search(header)
    charset = match.group(1).decode("ascii") if match else "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:  # an unfilled template header says "charset=CHARSET"
        charset = "utf-8"
    for msgid, msgstr in raw:
        msgid = msgid.rsplit(_CONTEXT_SEPARATOR, 1)[-1]
        if not msgid:
            continue
        yield CatalogEntry(
            msgids=[form.decode(charset, "replace") for form in msgid.split(_PLURAL_SEPARATOR)],
            msgstrs=[form.decode(charset, "replace") for form in msgstr.split(_PLURAL_SEPARATOR)],
        )
