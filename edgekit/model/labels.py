"""Label files as users have them, aligned with a model's outputs: plain lines, ``ID label`` lines, ``labelmap.pbtxt``.

The alignment rules (what "class c" of a model means):

* a classifier's output i is line i of a plain file, so a ``background``/``???`` first line stays: Coral's
  1001-class ImageNet models put the background class at output 0 (their imagenet_labels.txt starts with it);
* an SSD postprocess op (TFLite_Detection_PostProcess) numbers the *real* classes from 0: the background class it
  was trained with is not an output. The TF Object Detection API's ``labelmap.txt`` starts with a ``???``
  placeholder for that background and its ``labelmap.pbtxt`` numbers real classes from 1, so both are shifted by
  one; Coral's ``coco_labels.txt`` (plain lines with ``n/a`` gaps, or ``ID label`` lines) already counts from 0;
* when a file's size disagrees with the model's class count in a way more than one reading could explain, it is
  refused with one line rather than guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import InputError

# First lines that stand for the background class rather than a real one.
PLACEHOLDERS = frozenset({"???", "background", "__background__"})
_ID_LINE = re.compile(r"^(\d+)[\s:,]+(.+)$")
_PBTXT_ITEM = re.compile(r"item\s*\{(.*?)\}", re.S)
_PBTXT_FIELD = re.compile(r"""\b(id|name|display_name)\s*:\s*(?:"([^"]*)"|'([^']*)'|(\d+))""")


@dataclass(frozen=True)
class LabelFile:
    """A parsed label file, before it is aligned with a model."""

    path: str
    format: str  # "lines", "ids" or "pbtxt"
    entries: dict[int, str]  # as written: line index, or the file's ids

    @property
    def placeholder_first(self) -> bool:
        """The entry with the lowest id is a background placeholder (``???``, ``background``)."""
        return bool(self.entries) and self.entries[min(self.entries)].strip().lower() in PLACEHOLDERS


def read_label_file(path: str | Path) -> LabelFile:
    """Read a label file in any of the supported formats.

    Args:
        path: plain lines, ``ID label`` lines, or a ``labelmap.pbtxt``.

    Returns:
        The parsed file.

    Raises:
        InputError: missing, unreadable, empty, or a pbtxt without items.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: no such labels file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read labels ({exc})") from None
    if re.search(r"^\s*item\s*\{", text, re.M):
        return LabelFile(str(path), "pbtxt", _pbtxt(text, path))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{path}: labels file is empty")
    pairs = [_ID_LINE.match(line) for line in lines]
    if all(pairs):
        entries: dict[int, str] = {}
        for m in pairs:
            assert m is not None
            entries[int(m.group(1))] = m.group(2).strip()
        return LabelFile(str(path), "ids", entries)
    return LabelFile(str(path), "lines", dict(enumerate(lines)))


def _pbtxt(text: str, path: Path) -> dict[int, str]:
    entries: dict[int, str] = {}
    for item in _PBTXT_ITEM.findall(text):
        fields: dict[str, str] = {}
        for key, dq, sq, num in _PBTXT_FIELD.findall(item):
            fields[key] = dq or sq or num
        if "id" not in fields or not fields["id"].isdigit():
            raise InputError(f"{path}: an item without a numeric id; each item needs `id: N`")
        entries[int(fields["id"])] = fields.get("display_name") or fields.get("name") or fields["id"]
    if not entries:
        raise InputError(f"{path}: no `item {{ id: ... name: ... }}` entries")
    return entries


def align_labels(labels: LabelFile, task: str, num_classes: int, model: str = "the model") -> dict[int, str]:
    """Map the model's class ids to labels.

    Args:
        labels: the parsed file.
        task: ``classify`` or ``detect``.
        num_classes: the classifier's output count, or the detector's class count (0 when unknown).
        model: what to call the model in errors.

    Returns:
        class id -> label, as the model numbers its classes.

    Raises:
        InputError: the file cannot belong to the model, or more than one alignment would fit it.
    """
    entries, where = labels.entries, labels.path
    if task == "detect":
        # The postprocess op drops the background class: shift files that number it (pbtxt ids from 1, a
        # placeholder at 0) down by one.
        shift = 1 if labels.format == "pbtxt" or labels.placeholder_first else 0
        aligned = {i - shift: name for i, name in entries.items() if i - shift >= 0}
        if num_classes and labels.format == "lines" and len(entries) == num_classes + 1 and not shift:
            raise InputError(
                f"{where}: {len(entries)} lines for a detector with {num_classes} classes, and the first "
                f"({entries[0]!r}) is not a background placeholder; remove the extra line or start the file "
                "with '???'"
            )
        if num_classes and labels.format == "lines" and shift and len(entries) == num_classes:
            raise InputError(
                f"{where}: starts with the placeholder {entries[0]!r} but has only {num_classes} lines for "
                f"{num_classes} classes; give one line per class (after the placeholder, if any)"
            )
    else:
        aligned = dict(entries)
        if labels.format == "lines" and len(entries) != num_classes:
            hint = ""
            if len(entries) == num_classes - 1:
                hint = " (one short: is the background class at output 0 missing?)"
            elif len(entries) == num_classes + 1 and labels.placeholder_first:
                hint = f" (one extra: the placeholder {entries[0]!r}, but the model has no background output)"
            raise InputError(
                f"{where}: {len(entries)} labels but {model} has {num_classes} outputs{hint}; give the "
                "labels file that belongs to this model"
            )
    if num_classes and aligned and max(aligned) >= num_classes:
        raise InputError(
            f"{where}: class id {max(aligned)} but {model} knows {num_classes} classes (0..{num_classes - 1}); "
            "give the labels file that belongs to this model"
        )
    return aligned


def labels_for_outputs(path: str | Path, task: str, num_classes: int, model: str = "the model") -> tuple[str, ...]:
    """The label of every class id ``0..num_classes-1``, read and aligned as `edgekit run` does (for a manifest).

    Plain lines must label every class. A detector's unused ids (gaps in an ``ID label`` file or a pbtxt, as
    in the COCO label maps) become ``n/a``, the placeholder Coral's own ``coco_labels.txt`` uses.

    Raises:
        InputError: as :func:`align_labels`, or a classifier output without a label.
    """
    parsed = read_label_file(path)
    aligned = align_labels(parsed, task, num_classes, model)
    missing = [i for i in range(num_classes) if i not in aligned]
    if missing and (task != "detect" or parsed.format == "lines"):
        raise InputError(
            f"{path}: no label for output {missing[0]} (labels for {num_classes - len(missing)} of {num_classes} "
            "outputs); give every output a label"
        )
    return tuple(aligned.get(i, "n/a") for i in range(num_classes))
