"""riembench-train logs its training to W&B (offline run files read back) with epoch progress."""

import logging
import time

from hydra import compose, initialize_config_dir
from wandb_files import read_runs

from riembench.config.tree import config_dir
from riembench.harness.training import train_from_config


def test_training_is_a_wandb_run_with_epoch_history(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("RIEMBENCH_CACHE", str(tmp_path / "cache"))
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["backbone=lenet5", "dataset=digits", "train.epochs=2",
                                          "train.progress=false", "train.threads=1"])
    with caplog.at_level(logging.INFO, logger="riembench"):
        path = train_from_config(cfg)
    assert path.is_file()
    assert "epoch 2/2" in caplog.text and "ETA" in caplog.text
    # the offline run file is completed by W&B's writer process, which can lag the run's end
    deadline = time.time() + 30
    (run,) = read_runs(tmp_path / "wb")
    while run.job_type != "train" and time.time() < deadline:
        time.sleep(0.5)
        (run,) = read_runs(tmp_path / "wb")
    assert run.job_type == "train" and {"backbone:lenet5", "dataset:digits"} <= set(run.tags)
    epochs = [h for h in run.history if "dev/acc" in h]
    assert [h["_step"] for h in epochs] == [1, 2]
    assert all(0 <= h["dev/acc"] <= 100 and h["train/loss"] > 0 for h in epochs)
    assert run.summary["test/acc"] > 50 and run.summary["checkpoint"] == str(path)
    assert [a["type"] for a in run.artifacts] == ["model"]
    assert run.config["train"]["epochs"] == 2
