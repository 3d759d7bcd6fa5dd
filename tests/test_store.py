"""Run store: atomic, immutable, keyed by the identity of the run."""

import json

from riembench.config.identity import identity, run_key
from riembench.store.records import RunRecord, RunStore


def _record(seed=0, **cfg):
    config = {"method": {"name": "svd"}, "dataset": {"name": "synthetic", "n": 10}, "store": {"root": "x"}, **cfg}
    return RunRecord(table="table5", seed=seed, method="svd", dataset="synthetic",
                     cell={"method": "svd"}, config=config, metrics={"test_error": 0.1 * (seed + 1)})


def test_key_ignores_non_identity_keys_and_depends_on_seed():
    a = {"method": {"name": "riem"}, "store": {"root": "a"}, "wandb": {"mode": "offline"}, "seeds": [0, 1]}
    b = {"method": {"name": "riem"}, "store": {"root": "b"}, "wandb": {"mode": "online"}, "seeds": [0]}
    assert run_key(a, 0) == run_key(b, 0) != run_key(a, 1)
    assert identity(a, 3) == {"method": {"name": "riem"}, "seed": 3}
    assert run_key({"method": {"name": "lpnorm"}}, 0) != run_key({"method": {"name": "riem"}}, 0)


def test_write_is_atomic_and_never_overwrites(tmp_path):
    store = RunStore(tmp_path)
    path = store.write(_record())
    first = path.read_text()
    again = _record()
    again.metrics = {"test_error": 99.0}
    assert store.write(again) == path
    assert path.read_text() == first  # immutable: the first record stays
    assert not list(tmp_path.rglob(".tmp-*"))
    data = json.loads(first)
    assert data["versions"]["torch"] and data["git_rev"] and data["created_at"]


def test_load_flattens_and_skips_temp_files(tmp_path):
    store = RunStore(tmp_path)
    for s in range(3):
        store.write(_record(seed=s))
    (tmp_path / "table5" / ".tmp-half.json").write_text("{broken")
    df = store.load("table5")
    assert len(df) == 3 and sorted(df["seed"]) == [0, 1, 2]
    assert "metrics.test_error" in df.columns and "cell.method" in df.columns
