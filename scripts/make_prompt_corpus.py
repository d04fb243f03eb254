"""Build the broad benign prompt corpus (data/prompts/*.jsonl): real people's text of many kinds, one file a source.

The development benign prompts (AlpacaEval, self-instruct seeds, certified-llm-safety safe prompts, Banking77)
are curated and clean; real traffic holds terse keyword strings, product, library and framework names,
non-English text, pasted code, logs and changelogs, and chatty customer turns.  Each source below is public
text written by people, taken deterministically (records ordered by the SHA-256 of their group key) and capped,
so the corpus is reproducible from the same inputs:

=====================  ==========================================================================================
``banking77`` ...      the four sources of ../shared/data/prompts/benign.jsonl, split by their ``source`` field
``sgd_customer``       customer turns of the Schema-Guided Dialogue corpus (../shared/data/domains/support_dialogues)
``alpaca_inputs``      user queries of HaluEval general (Alpaca instructions, many with pasted input data)
``debian_short``       Debian bookworm package short descriptions: terse strings of product and library names
``debian_long``        Debian package long descriptions: technical paragraphs written by maintainers
``debian_i18n``        DDTP translations of Debian descriptions (de, es, fr, it, ja, nl, pl, pt_BR, ru, uk, zh_CN)
``debian_changelog``   entries of the changelog.Debian files of the Debian packages installed on the build machine
``code_paste``         a chunk of a CPython 3.11 standard-library module pasted under a one-line question
``doc_paste``          a stretch of a README or NEWS file of the Debian packages installed on the build machine
                       (markdown and reStructuredText: tables, rules, lists, URLs, version histories) pasted with a
                       one-line ask, 150 to 4,500 characters
=====================  ==========================================================================================

Records: ``{"prompt", "label": "benign", "source", "group", "licence", ...}``; ``group`` is the key splits use
(a Debian package, a dialogue, a module).  The Debian sources need ``apt-get update -o
Acquire::Languages=en,de,es,fr,it,ja,nl,pl,pt_BR,ru,uk,zh_CN`` first (Debian's own package registry).

Usage: ``python scripts/make_prompt_corpus.py [--shared ../shared/data] [--out data/prompts] [--only NAME,...]``
(the Debian changelog and doc sources read the build machine's installed packages: ``--only`` adds a source
without rewriting the others).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import re
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APT_LISTS = Path("/var/lib/apt/lists")
LANGS = ["de", "es", "fr", "it", "ja", "nl", "pl", "pt_BR", "ru", "uk", "zh_CN"]
CAP = 600

DEV_SOURCES = {
    "PolyAI-LDN/task-specific-datasets": ("banking77", "CC BY 4.0"),
    "tatsu-lab/alpaca_eval": ("alpacaeval", "CC BY-NC 4.0"),
    "aounon/certified-llm-safety": ("certified_safe", "MIT"),
    "yizhongw/self-instruct": ("self_instruct", "Apache-2.0"),
}
DEBIAN_DOC_LICENCE = "each file belongs to its Debian package and is distributed under that package's licence (its /usr/share/doc/<package>/copyright)"
DEBIAN_LICENCE = "each description belongs to its Debian package and is distributed under that package's (DFSG-free) licence"

# one-line asks put above pasted code (people paste code under a short question)
CODE_ASKS = [
    "What does this code do?", "Can you explain this function?", "Why does this raise an exception sometimes?",
    "How can I make this faster?", "Is there a bug here?", "Add type hints to this:", "Write tests for this code",
    "refactor pls", "Convert this to async", "what is wrong with this", "Explain line by line:",
    "Can this be simplified?",
]


def h(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def take(records: Iterable[dict], cap: int = CAP) -> list[dict]:
    """At most ``cap`` records, one per distinct prompt, ordered by the hash of their group then prompt."""
    seen, out = set(), []
    for r in sorted(records, key=lambda r: (h(r["group"]), h(r["prompt"]))):
        p = r["prompt"].strip()
        if not p or p in seen:
            continue
        seen.add(p)
        out.append({**r, "prompt": p})
        if len(out) == cap:
            break
    return out


def jsonl(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def dev_benign(shared: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in jsonl(shared / "prompts" / "benign.jsonl"):
        name, lic = DEV_SOURCES[r["source"]]
        out.setdefault(name, []).append({"prompt": r["prompt"], "label": "benign", "source": name,
                                         "group": r["prompt"], "licence": lic, "origin": r["source"]})
    return out  # all of them: these are the development prompts the shipped baseline was fitted on


def sgd_customer(shared: Path) -> list[dict]:
    recs = []
    for i, r in enumerate(jsonl(shared / "domains" / "support_dialogues.jsonl")):
        turns = [t[len("Customer: "):] for t in r["text"].split("\n") if t.startswith("Customer: ")]
        for t in turns:
            if len(t.split()) >= 3:
                recs.append({"prompt": t, "label": "benign", "source": "sgd_customer", "group": f"dialogue-{i}",
                             "licence": "CC BY-SA 4.0", "origin": "google-research-datasets/dstc8-schema-guided-dialogue"})
    # one turn per dialogue: turns of one dialogue are alike
    per: dict[str, dict] = {}
    for r in sorted(recs, key=lambda r: h(r["prompt"])):
        per.setdefault(r["group"], r)
    return take(per.values())


def alpaca_inputs(shared: Path) -> list[dict]:
    recs = [{"prompt": r["user_query"], "label": "benign", "source": "alpaca_inputs", "group": r["user_query"],
             "licence": "MIT", "origin": "RUCAIBox/HaluEval (general)"}
            for r in jsonl(shared / "outputs" / "halueval_general.jsonl")]
    return take(recs)


def apt_file(lang: str) -> str:
    name = "pt%5fBR" if lang == "pt_BR" else "zh%5fCN" if lang == "zh_CN" else lang
    paths = glob.glob(str(APT_LISTS / f"*_debian_dists_bookworm_main_i18n_Translation-{name}*"))
    if not paths:
        raise SystemExit(f"no Translation-{lang} in {APT_LISTS}: run apt-get update with "
                         f"-o Acquire::Languages={','.join(['en', *LANGS])}")
    return subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", paths[0]], check=True, capture_output=True,
                          text=True).stdout


def descriptions(lang: str) -> Iterator[tuple[str, str, str]]:
    """(package, short description, long description as paragraphs) of one Translation file."""
    for block in apt_file(lang).split("\n\n"):
        pkg = re.search(r"^Package: (.+)$", block, re.M)
        m = re.search(rf"^Description-{lang}: (.*)$((?:\n .*)*)", block, re.M)
        if not pkg or not m:
            continue
        long = []
        for line in m.group(2).split("\n")[1:]:
            line = line[1:]
            long.append("" if line == "." else line)
        text = re.sub(r"[ \t]*\n(?!\n)", " ", "\n".join(long)).strip()  # paragraphs joined, lines unwrapped
        yield pkg.group(1), m.group(1).strip(), "\n\n".join(p.strip() for p in text.split("\n") if p.strip())


def debian_sources() -> dict[str, list[dict]]:
    short, long = [], []
    for pkg, s, text in descriptions("en"):
        base = {"label": "benign", "group": f"deb:{pkg}", "licence": DEBIAN_LICENCE, "origin": f"Debian bookworm {pkg}"}
        short.append({**base, "prompt": s, "source": "debian_short"})
        if 80 <= len(text) <= 1500:
            long.append({**base, "prompt": text, "source": "debian_long"})
    i18n = []
    for lang in LANGS:
        recs = []
        for pkg, s, text in descriptions(lang):
            base = {"label": "benign", "group": f"deb:{pkg}", "licence": DEBIAN_LICENCE, "lang": lang,
                    "origin": f"Debian bookworm DDTP Translation-{lang} {pkg}", "source": "debian_i18n"}
            recs.append({**base, "prompt": s if h(pkg + lang).startswith(tuple("0123")) else text[:1500]})
        i18n.extend(take(recs, CAP // len(LANGS) + 1))
    # the three sources never share a package: translated packages first (the scarcest), then short/long by hash
    i18n_pkgs = {r["group"] for r in i18n}
    owner = {}
    for r in sorted(short + long, key=lambda r: h(r["group"] + r["source"])):
        if r["group"] not in i18n_pkgs:
            owner.setdefault(r["group"], r["source"])
    return {"debian_i18n": i18n, **{name: take([r for r in recs if owner.get(r["group"]) == name])
                                    for name, recs in (("debian_short", short), ("debian_long", long))}}


def debian_changelog() -> list[dict]:
    recs = []
    for path in sorted(glob.glob("/usr/share/doc/*/changelog.Debian.gz")):
        pkg = Path(path).parent.name
        try:
            text = gzip.open(path, "rt", encoding="utf-8", errors="strict").read()
        except (OSError, UnicodeDecodeError):
            continue
        for entry in re.split(r"\n(?=\S+ \([^)]*\) [^\n]*urgency=)", text)[:8]:
            body = [ln.strip() for ln in entry.split("\n")[1:] if ln.strip() and not ln.startswith(" -- ")]
            body_text = "\n".join(body).strip()
            if 20 <= len(body_text) <= 1200:
                recs.append({"prompt": body_text, "label": "benign", "source": "debian_changelog", "group": f"deb:{pkg}",
                             "licence": DEBIAN_LICENCE, "origin": f"changelog.Debian of {pkg}"})
    per: dict[str, list[dict]] = {}
    for r in sorted(recs, key=lambda r: h(r["prompt"])):
        per.setdefault(r["group"], []).append(r)
    return take([r for rs in per.values() for r in rs[:2]])


def code_paste(shared: Path) -> list[dict]:
    recs = []
    for r in jsonl(shared / "domains" / "code_python.jsonl"):
        src = r["text"]
        name = r.get("source_path") or r.get("path") or h(src)[:12]
        # top-level functions and classes, each a natural unit to paste
        for m in re.finditer(r"^(?:def|class) \w+.*?(?=^\S|\Z)", src, re.M | re.S):
            block = m.group(0).rstrip()
            if 120 <= len(block) <= 1400:
                ask = CODE_ASKS[int(h(block)[:8], 16) % len(CODE_ASKS)]
                recs.append({"prompt": f"{ask}\n\n{block}", "label": "benign", "source": "code_paste",
                             "group": f"py:{name}", "licence": "PSF-2.0", "origin": f"CPython 3.11.7 {name}"})
    per: dict[str, list[dict]] = {}
    for r in sorted(recs, key=lambda r: h(r["prompt"])):
        per.setdefault(r["group"], []).append(r)
    return take([r for rs in per.values() for r in rs[:6]])


# one-line asks said around a pasted document (people paste a README or a changelog and ask about it)
DOC_ASKS = [
    "Summarize this:", "What does this mean?", "Can you explain this in simple terms?", "tl;dr pls",
    "I found this in the docs, what do I need to do?", "Explain the important parts of this README",
    "Is this relevant if I'm on Debian 12?", "Translate this into plain English:", "Which of these changes break things?",
    "how do i install this", "What's new in this release?", "Make a short list of the key points:",
]
DOC_FILES = re.compile(r"^(README|NEWS)(\.(md|markdown|rst|txt|Debian|Bugs|source))*(\.gz)?$")
DOC_LENGTHS = (150, 4500)  # characters of pasted text, log-uniform by hash


def doc_paste() -> list[dict]:
    recs, seen = [], set()
    for path in sorted(glob.glob("/usr/share/doc/*/*")):
        p = Path(path)
        if not DOC_FILES.match(p.name):
            continue
        try:
            raw = gzip.open(p, "rb").read() if p.suffix == ".gz" else p.read_bytes()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if h(text) in seen or len(text) < DOC_LENGTHS[0]:
            continue  # the same README ships in several packages (gcc's, for one)
        seen.add(h(text))
        pkg = p.parent.name
        blocks = [b for b in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if b.strip()]
        start = int(h(f"{pkg}/{p.name}")[8:16], 16) % max(1, len(blocks) // 2)
        for part in range(2):  # two disjoint stretches a file at most: the second starts where the first ended
            key = h(f"{pkg}/{p.name}#{part}")
            lo, hi = DOC_LENGTHS
            want = lo * (hi / lo) ** (int(key[:8], 16) / 0xFFFFFFFF)
            chunk: list[str] = []
            for b in blocks[start:]:
                if chunk and len("\n\n".join([*chunk, b])) > want:
                    break
                chunk.append(b.rstrip())
            start += len(chunk)
            body = "\n\n".join(chunk)[:hi].strip("\n")
            if len(body) < lo or h(body) in seen:
                continue
            seen.add(h(body))
            ask = DOC_ASKS[int(key[16:24], 16) % len(DOC_ASKS)]
            prompt = f"{body}\n\n{ask}" if int(key[24:26], 16) % 3 == 0 else f"{ask}\n\n{body}"
            recs.append({"prompt": prompt, "label": "benign", "source": "doc_paste", "group": f"deb:{pkg}",
                         "licence": DEBIAN_DOC_LICENCE, "origin": f"/usr/share/doc/{pkg}/{p.name}"})
    return take(recs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "data" / "prompts"))
    ap.add_argument("--only", default="", help="comma-separated source names to (re)build; default: all")
    args = ap.parse_args()
    shared, out = Path(args.shared), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    builders = {"dev": lambda: dev_benign(shared), "sgd_customer": lambda: {"sgd_customer": sgd_customer(shared)},
                "alpaca_inputs": lambda: {"alpaca_inputs": alpaca_inputs(shared)}, "debian": debian_sources,
                "debian_changelog": lambda: {"debian_changelog": debian_changelog()},
                "code_paste": lambda: {"code_paste": code_paste(shared)}, "doc_paste": lambda: {"doc_paste": doc_paste()}}
    only = [n for n in args.only.split(",") if n]
    if unknown := set(only) - set(builders):
        raise SystemExit(f"unknown source(s) {sorted(unknown)}; known: {sorted(builders)}")
    sources = {k: v for name, build in builders.items() if not only or name in only for k, v in build().items()}
    for name, recs in sorted(sources.items()):
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{name}: {len(recs)} records, median {sorted(len(r['prompt']) for r in recs)[len(recs) // 2]} chars")


if __name__ == "__main__":
    main()
