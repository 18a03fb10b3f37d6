import json

import pytest
import torch

import stagewise.data.domains as domains
from stagewise.data.corpus import CorpusConfig, clean_text
from stagewise.data.domains import (DomainConfig, domain_documents, domain_manifest, domain_sgld_data,
                                    load_domain_contexts, load_domain_tokens, python_sources)
from stagewise.data.tokenizer import BOS_TOKEN, load_tokenizer

BOS = load_tokenizer().token_to_id(BOS_TOKEN)

MODULE_A = 'def add(a, b):\n    """Return a + b."""\n    return a + b\n\n\nclass Box:\n    def __init__(self, x):\n        self.x = x\n'
MODULE_B = "import os\n\n\ndef walk(root):\n    for folder, dirs, files in os.walk(root):\n        yield folder, files\n"


@pytest.fixture
def fake_stdlib(tmp_path, monkeypatch):
    root = tmp_path / "lib" / "python3.x"
    for rel, text in {"alpha.py": MODULE_A, "pkg/beta.py": MODULE_B, "pkg/notes.txt": "not python " * 20,
                      "test/test_alpha.py": MODULE_A, "site-packages/thirdparty.py": MODULE_B,
                      "encodings/cp000.py": MODULE_A}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "LICENSE.txt").write_text("PSF licence")
    monkeypatch.setattr(domains, "stdlib_root", lambda: root)
    load_domain_contexts.cache_clear()
    return root


def _decode(ids):
    return load_tokenizer().decode(ids, skip_special_tokens=False)


def test_code_domain_is_the_library_sources_tokenised_like_the_corpus(tmp_cache, fake_stdlib):
    assert [p.relative_to(fake_stdlib).as_posix() for p in python_sources(fake_stdlib)] == ["alpha.py", "pkg/beta.py"]
    config = DomainConfig("code", min_document_chars=10)
    docs, manifest = domain_documents(config)
    # cleaned like the corpus (clean_text: runs of blank lines become one)
    assert [d.title for d in docs] == ["alpha.py", "pkg/beta.py"] and docs[0].text == clean_text(MODULE_A)
    assert manifest["licence"].startswith("PSF-2.0") and manifest["files"] == 2 and len(manifest["sha256"]) == 64

    stream = load_domain_tokens(config, progress=False)
    assert stream.dtype == torch.int32
    assert _decode(stream.tolist()) == f"{BOS_TOKEN}{clean_text(MODULE_A)}{BOS_TOKEN}{clean_text(MODULE_B)}"
    contexts = load_domain_contexts(config, 16)
    assert contexts.shape[1] == 16 and (contexts[:, 0] == BOS).all()
    assert torch.equal(contexts[:, 1:].reshape(-1), stream[:contexts.shape[0] * 15])  # packed as load_contexts does
    (sgld,) = domain_sgld_data(config, 16)
    assert sgld.dtype == torch.long and torch.equal(sgld, contexts.long())
    written = domain_manifest(config)
    assert written["documents"] == 2 and written["tokens"] == stream.numel() and written["source"] == manifest
    assert json.loads((next(tmp_cache.glob("lm-domain/*/manifest.json"))).read_text()) == written


def test_code_domain_is_cached_and_keyed_by_the_file_contents(tmp_cache, fake_stdlib, monkeypatch):
    config = DomainConfig("code", min_document_chars=10)
    import stagewise.data.language as language

    first = load_domain_tokens(config, progress=False)
    real, calls = language.tokenize_documents, []
    monkeypatch.setattr(language, "tokenize_documents", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert torch.equal(load_domain_tokens(config, progress=False), first)
    assert calls == []  # served from the cache
    (fake_stdlib / "alpha.py").write_text(MODULE_A + "\nX = 1\n")  # another interpreter's sources
    changed = load_domain_tokens(config, progress=False)
    assert calls == [1] and not torch.equal(changed, first)
    assert len(list(tmp_cache.glob("lm-domain/*/tokens.pt"))) == 2


def test_character_budget_is_deterministic_and_respected(tmp_cache, fake_stdlib):
    for i in range(12):
        (fake_stdlib / f"mod{i:02d}.py").write_text(f"def f{i}(x):\n    return x * {i} + {i * i}\n" * 3)
    config = DomainConfig("code", max_chars=400, min_document_chars=10, seed=3)
    docs, _ = domain_documents(config)
    again, _ = domain_documents(config)
    assert [d.title for d in docs] == [d.title for d in again] and 0 < sum(len(d.text) for d in docs) <= 400
    other, _ = domain_documents(DomainConfig("code", max_chars=400, min_document_chars=10, seed=4))
    assert {d.title for d in other} != {d.title for d in docs}  # the seed picks another subset
    assert [d.title for d in docs] == sorted(d.title for d in docs)  # kept in file order


def test_german_domain_parses_fortune_files(tmp_cache, tmp_path, monkeypatch):
    folder = tmp_path / "unpacked" / "usr" / "share" / "games" / "fortunes" / "de"
    folder.mkdir(parents=True)
    (folder / "zitate").write_text("Der Weg ist das Ziel, sagte er.\n\t\t-- Konfuzius\n%\n"
                                   "Wer nicht wagt, der nicht gewinnt, und so weiter.\n%\n", encoding="utf-8")
    (folder / "zitate.dat").write_bytes(b"\x00\x01binary index")
    (folder / "zitate.u8").symlink_to(folder / "zitate")
    (folder / "asciiart").write_text("  /\\_/\\\n ( o.o )\n" * 10)
    archive = tmp_path / "fortunes-de_0.35-1_all.deb"
    archive.write_bytes(b"fake archive")
    monkeypatch.setattr(domains, "_fetch_package", lambda pkg: (archive, tmp_path / "unpacked"))
    docs, manifest = domain_documents(DomainConfig("german", min_document_chars=10))
    assert len(docs) == 1 and docs[0].title == "zitate"
    assert docs[0].text == ("Der Weg ist das Ziel, sagte er.\n        -- Konfuzius\n\n"
                            "Wer nicht wagt, der nicht gewinnt, und so weiter.")
    assert manifest["name"] == "fortunes-de" and manifest["version"] == "0.35-1"
    assert manifest["licence"].startswith("GPL-2.0") and manifest["files"] == ["zitate"]


def test_corpus_source_domain_keeps_one_source(tmp_cache):
    corpus = CorpusConfig(source="sample", max_document_chars=1500, validation_fraction=0.1, sgld_fraction=0.1)
    docs, manifest = domain_documents(DomainConfig("corpus", corpus=corpus, corpus_source="austen",
                                                   corpus_split="train", min_document_chars=0))
    assert docs and {d.source for d in docs} == {"austen"}
    from stagewise.data.corpus import load_corpus

    train = load_corpus(corpus)["train"]
    assert len(docs) == sum(1 for s in train["source"] if s == "austen")
    with pytest.raises(ValueError, match="corpus_source 'nope'"):
        domain_documents(DomainConfig("corpus", corpus=corpus, corpus_source="nope"))


def test_real_stdlib_listing_excludes_tests_and_installed_packages():
    root = domains.stdlib_root()
    rel = {p.relative_to(root).as_posix() for p in python_sources(root)}
    assert "json/decoder.py" in rel and "os.py" in rel
    assert not any(r.startswith(("test/", "idlelib/", "site-packages/", "encodings/")) for r in rel)


def test_bad_configs():
    with pytest.raises(ValueError, match="name"):
        DomainConfig("klingon")
    with pytest.raises(ValueError, match="max_chars"):
        DomainConfig("code", max_chars=-1)
    with pytest.raises(ValueError, match="corpus_source"):
        DomainConfig("corpus", corpus=CorpusConfig(source="sample"))
    with pytest.raises(ValueError, match="only apply"):
        DomainConfig("code", corpus_source="wikipedia")
    with pytest.raises(ValueError, match="corpus_split"):
        DomainConfig("corpus", corpus=CorpusConfig(source="sample"), corpus_source="austen", corpus_split="test")
