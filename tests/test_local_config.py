"""A machine's local config, written as plain keys, applies after the experiment."""

from hydra import compose, initialize_config_dir

from riembench.config.tree import config_dir


def _compose(overrides):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=overrides)


def test_user_local_config_wins_over_the_experiment(tmp_path, monkeypatch):
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text(
        "data:\n  root: /mnt/datasets\n  num_workers: 7\nthreads: 3\nwandb:\n  entity: lab\n")
    (tmp_path / "local" / "gpu.yaml").write_text("device: cuda:1\n")
    monkeypatch.setenv("RIEMBENCH_CONFIG_HOME", str(tmp_path))
    cfg = _compose(["experiment=table5"])  # table5 sets threads: 1
    assert cfg.data.root == "/mnt/datasets" and cfg.data.num_workers == 7
    assert cfg.threads == 3 and cfg.wandb.entity == "lab"
    assert cfg.data.batch_size == 256  # keys the local file does not set keep their defaults
    assert _compose(["experiment=table5", "threads=2"]).threads == 2  # the command line wins
    assert _compose(["local@_global_=gpu"]).device == "cuda:1"  # another machine profile


def test_default_home_folder_and_no_local_config(tmp_path, monkeypatch):
    monkeypatch.delenv("RIEMBENCH_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _compose([]).store.root != "/srv/riembench-runs"  # no local file yet: defaults
    (tmp_path / ".config" / "riembench" / "local").mkdir(parents=True)
    (tmp_path / ".config" / "riembench" / "local" / "default.yaml").write_text(
        "store:\n  root: /srv/riembench-runs\n")
    assert _compose(["experiment=table1"]).store.root == "/srv/riembench-runs"
