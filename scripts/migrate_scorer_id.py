"""Move stored scores, generations and baselines to the embedded scorer's id without ``top_k``.

The embedded scorer's ``top_k`` sets how many alternatives a token lists; it changes no logprob and no entropy
(the entropy is exact, over the whole vocabulary), so it left the scorer id (issue 12, item 9).  Every number
stored under an old id is the number the new id gives, so the stores are renamed, not recomputed:

* the score cache (``scores.sqlite``): rows keyed ``<new id>`` (``<new id>#top_k=K`` when they list
  alternatives: a segment cached without them must not answer a request for them), each payload's
  ``scorer_id`` rewritten;
* generation stores (JSONL, ``scorer`` per record);
* baseline files: ``scorer_id`` and the checksum (so the baseline id changes); the old -> new baseline ids
  are then replaced wherever else they are written (evaluation results, docs) with ``--rewrite``.

Idempotent: an id without ``top_k`` is left as it is.  The evidence that a rename is right is a refit from a
cold cache (``scripts/fit_baselines.py`` with ``GUARDRAIL_CACHE_DIR`` empty) giving the same file.

    python scripts/migrate_scorer_id.py [--cache PATH] [--store PATH ...] [--baselines DIR ...]
                                        [--rewrite FILE ...] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guardrail.backends.base import ScorerInfo  # noqa: E402
from guardrail.baselines.model import Baseline, save_baseline  # noqa: E402


def new_id(sid: str) -> tuple[str, int]:
    """(the id without ``top_k``, the ``top_k`` it had); ids of other backends, or already new, unchanged."""
    try:
        info = ScorerInfo.from_id(sid)
    except ValueError:
        return sid, 0
    if info.backend != "llamacpp" or "top_k" not in info.settings:
        return sid, 0
    settings = dict(info.settings)
    k = int(settings.pop("top_k"))
    return info.model_copy(update={"settings": settings}).id, k


def migrate_cache(path: Path, dry: bool) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    n = 0
    keys = [r[0] for r in db.execute("SELECT DISTINCT scorer_id FROM scores")]
    for old in keys:
        base, sep, rest = old.partition("#")
        sid, k = new_id(base)
        if sid == base:
            continue
        key = sid + (f"#top_k={k}" if k else "") + (sep + rest if sep else "")
        rows = db.execute("SELECT side, text_sha256, payload, created FROM scores WHERE scorer_id=?", (old,)).fetchall()
        out = []
        for side, sha, payload, created in rows:
            d = json.loads(zlib.decompress(payload))
            d["scorer_id"] = new_id(d.get("scorer_id", ""))[0]
            out.append((key, side, sha, zlib.compress(json.dumps(d, separators=(",", ":")).encode(), 6), created))
        n += len(out)
        if not dry:
            db.executemany("INSERT OR REPLACE INTO scores (scorer_id, side, text_sha256, payload, created) "
                           "VALUES (?,?,?,?,?)", out)
            db.execute("DELETE FROM scores WHERE scorer_id=?", (old,))
            db.commit()
    db.close()
    return n


def migrate_store(path: Path, dry: bool) -> int:
    if not path.exists():
        return 0
    lines, n = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        sid, _ = new_id(d.get("scorer", ""))
        n += sid != d.get("scorer")
        d["scorer"] = sid
        lines.append(json.dumps(d, ensure_ascii=False))
    if n and not dry:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.chmod(path.stat().st_mode & 0o777)
        tmp.replace(path)
    return n


def migrate_baselines(folder: Path, dry: bool) -> dict[str, str]:
    """Rewrite every baseline file in ``folder``; returns old -> new for baseline ids and scorer ids."""
    renames: dict[str, str] = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "scorer_id" not in data:
            continue
        sid, _ = new_id(data["scorer_id"])
        if sid == data["scorer_id"]:
            continue
        renames[data["scorer_id"]] = sid
        if data.get("format") != "guardrail.baseline/2":  # e.g. the evaluation reference: a plain field
            data["scorer_id"] = sid
            if not dry:
                path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
            continue
        b = Baseline.model_validate(data)
        if b.checksum != b._digest():
            raise SystemExit(f"{path}: checksum mismatch before migration: not touching a modified file")
        old = b.id
        b.scorer_id = sid
        b.checksum = ""
        b.checksum = b._digest()
        renames[old] = b.id
        if not dry:
            save_baseline(b, path)
    return renames


def rewrite(path: Path, renames: dict[str, str], dry: bool) -> int:
    text = path.read_text(encoding="utf-8")
    n = 0
    for old, new in sorted(renames.items(), key=lambda kv: -len(kv[0])):  # longest first: ids contain ids
        n += text.count(old)
        text = text.replace(old, new)
    if n and not dry:
        path.write_text(text, encoding="utf-8")
    return n


def main() -> None:
    from guardrail.cache import default_cache_path
    from guardrail.evaluation.generations import default_store_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=default_cache_path())
    ap.add_argument("--store", type=Path, nargs="*", default=[default_store_path()])
    ap.add_argument("--baselines", type=Path, nargs="*", default=[])
    ap.add_argument("--rewrite", type=Path, nargs="*", default=[], help="files where old ids become new ones")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args()
    print(f"score cache {a.cache}: {migrate_cache(a.cache, a.dry_run)} rows")
    for s in a.store:
        print(f"generation store {s}: {migrate_store(s, a.dry_run)} records")
    renames: dict[str, str] = {}
    for folder in a.baselines:
        renames.update(migrate_baselines(folder, a.dry_run))
    for old, new in renames.items():
        print(f"  {old} -> {new}")
    for f in a.rewrite:
        print(f"{f}: {rewrite(f, renames, a.dry_run)} ids")


if __name__ == "__main__":
    main()
