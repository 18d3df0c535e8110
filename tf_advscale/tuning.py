"""keras-tuner depth searches with a robustness objective.

    config = config_lib.load("configs/adversarial.py:fmnist,adv_only")
    train_ds, info = data.load(...)            # info: num_classes, shape, steps_per_epoch
    hypermodel = DepthSearch(config, info, depths=(8, 14, 20, 32, 56))
    tuner = make_tuner("bayesian", hypermodel, max_trials=8, directory="runs/search")
    tuner.search(train_ds, validation_data=val_ds, epochs=config["optimizer"]["epochs"])
    summarize(tuner)     # one row per trial: depth, width, robust accuracy, cost

The search space is the depth of the config's ResNet family (for the CIFAR
family the number of blocks per stage, depth = 6n + 2) and its width
multiplier; everything else is the config's, and every trial is built by
``recipe.build`` exactly as ``advscale train`` builds its model (trainer,
optimizer, learning-rate schedule, precision). Each trial is scored by its
validation accuracy under ``eval_attack`` (``val_adv_accuracy``,
maximised) and records its cost: training seconds, parameter count and
images per second.
"""

import time

import keras_tuner

from tf_advscale import config as config_lib
from tf_advscale import recipe
from tf_advscale.models import count_params
from tf_advscale.models.resnet import blocks_for

OBJECTIVE = keras_tuner.Objective("val_adv_accuracy", direction="max")
TUNERS = ("random", "bayesian", "hyperband")


class DepthSearch(keras_tuner.HyperModel):
    """A HyperModel over the depth and width of one training config's ResNet.

    Args:
        config: the training recipe, a config dict as ``advscale train`` takes
            (merged over ``config.DEFAULTS``). Only ``model.depth`` and
            ``model.width`` are searched; the learning-rate schedule spans
            ``optimizer.epochs``, so search with that many epochs.
            ``eval_attack`` (the objective's attack) must not be None.
        info: of the training data: ``num_classes``, ``shape`` and
            ``steps_per_epoch``, as ``data.load`` returns it.
        depths: candidate depths of ``model.family`` (``"cifar"``: 6n + 2).
        widths: candidate width multipliers.

    """

    def __init__(self, config, info=None, depths=(8, 14, 20, 32, 56), widths=(1.0,),
                 **kwargs):
        super().__init__(**kwargs)
        if not isinstance(config, dict):
            raise ValueError(f"DepthSearch takes a training config (a dict, as advscale train "
                             f"takes) and the data's info. Received: config={config!r}")
        config = config_lib.merge(config)
        missing = [k for k in ("num_classes", "shape", "steps_per_epoch") if k not in (info or {})]
        if missing:
            raise ValueError(f"info must give the data's num_classes, shape and "
                             f"steps_per_epoch. Missing: {missing}")
        if config["eval_attack"] is None:
            raise ValueError("eval_attack is needed: it defines the robustness objective")
        if config["init_from"] is not None or config["init_skip"]:
            raise ValueError("init_from must be None (and init_skip empty) for a depth search: "
                             "its trials differ in architecture. Received: init_from="
                             f"{config['init_from']!r}, init_skip={config['init_skip']!r}")
        family = config["model"]["family"]
        if family == "cifar":
            bad = [d for d in depths if not isinstance(d, int) or d < 8 or (d - 2) % 6]
            if bad or not depths:
                raise ValueError(f"depths must be CIFAR ResNet depths 6n+2 >= 8. "
                                 f"Received: {depths}")
        else:
            if not depths:
                raise ValueError(f"depths must not be empty. Received: {depths}")
            for d in depths:
                blocks_for(family, d)  # raises, naming the depth, if the table lacks it
        if not widths or any(not w or w <= 0 for w in widths):
            raise ValueError(f"widths must be positive numbers. Received: {widths}")
        self.config, self.info, self.family = config, dict(info), family
        self.depths = sorted(set(depths))
        self.blocks = sorted({(d - 2) // 6 for d in depths})
        self.widths = sorted(set(float(w) for w in widths))

    def build(self, hp):
        if self.family == "cifar":
            depth = 6 * hp.Choice("blocks_per_stage", self.blocks) + 2
        else:
            depth = hp.Choice("depth", self.depths)
        width = hp.Choice("width", self.widths)
        return recipe.build(self.config, self.info, depth=depth, width=width)

    def fit(self, hp, model, *args, **kwargs):
        """Trains one trial; returns the objective and the trial's cost.
        ``trainer.catastrophic_overfitting`` adds the runner's monitor."""
        monitor = recipe.overfitting_monitor(self.config, kwargs.get("validation_data"))
        if monitor is not None:
            kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [monitor]
        start = time.time()
        history = model.fit(*args, **kwargs)
        seconds = time.time() - start
        logs = history.history
        if "val_adv_accuracy" not in logs:
            raise ValueError("the search needs validation_data: its objective is "
                             "val_adv_accuracy")
        steps = sum(1 for _ in logs["loss"]) * (history.params.get("steps") or 0)
        images = steps * _batch_size(args, kwargs)
        return {"val_adv_accuracy": max(logs["val_adv_accuracy"]),
                "val_clean_accuracy": logs["val_clean_accuracy"][
                    logs["val_adv_accuracy"].index(max(logs["val_adv_accuracy"]))],
                "train_seconds": seconds, "params": float(count_params(model.model)),
                "images_per_second": images / seconds if images and seconds else 0.0}


def _batch_size(args, kwargs):
    data = args[0] if args else kwargs.get("x")
    spec = getattr(data, "element_spec", None)
    if spec is not None:
        first = spec[0] if isinstance(spec, tuple) else spec
        return int(first.shape[0] or 0)
    return int(kwargs.get("batch_size") or 0)


def make_tuner(kind, hypermodel, max_trials=8, max_epochs=8, directory="runs/depth_search",
               project_name="depth_search", seed=0, overwrite=False, **kwargs):
    """A keras-tuner ``RandomSearch``, ``BayesianOptimization`` or
    ``Hyperband`` (``max_epochs``) maximising ``val_adv_accuracy``. An
    existing ``directory`` resumes the search unless ``overwrite``."""
    if kind not in TUNERS:
        raise ValueError(f"Unknown tuner. Expected one of {TUNERS}. Received: {kind!r}")
    common = dict(objective=OBJECTIVE, seed=seed, directory=directory,
                  project_name=project_name, overwrite=overwrite, **kwargs)
    if kind == "random":
        return keras_tuner.RandomSearch(hypermodel, max_trials=max_trials, **common)
    if kind == "bayesian":
        return keras_tuner.BayesianOptimization(hypermodel, max_trials=max_trials, **common)
    return keras_tuner.Hyperband(hypermodel, max_epochs=max_epochs, **common)


def summarize(tuner):
    """One dict per finished trial: depth, width, score and cost, best first."""
    rows = []
    for trial in tuner.oracle.get_best_trials(num_trials=10**6):
        hp = trial.hyperparameters.values
        metrics = {name: trial.metrics.get_last_value(name)
                   for name in ("val_adv_accuracy", "val_clean_accuracy", "train_seconds",
                                "params", "images_per_second")}
        if metrics["params"] is not None:  # keras-tuner keeps every metric as a float
            metrics["params"] = int(metrics["params"])
        depth = hp["depth"] if "depth" in hp else 6 * hp["blocks_per_stage"] + 2
        rows.append({"trial": trial.trial_id, "depth": depth,
                     "width": hp["width"], "epochs": hp.get("tuner/epochs"),
                     "score": trial.score, "status": trial.status, **metrics})
    return rows
