"""keras-tuner depth searches with a robustness objective.

    hypermodel = DepthSearch(input_shape=(28, 28, 1), num_classes=10,
                             attack={"name": "pgd", "epsilon": 0.1, "step_size": 0.04, "steps": 3},
                             eval_attack={"name": "pgd", "epsilon": 0.1, "step_size": 0.01,
                                          "steps": 20})
    tuner = make_tuner("bayesian", hypermodel, max_trials=8, directory="runs/search")
    tuner.search(train_ds, validation_data=val_ds, epochs=5)
    summarize(tuner)     # one row per trial: depth, width, robust accuracy, cost

The search space is the number of blocks per stage of a CIFAR-style ResNet
(depth = 6n + 2) and its width multiplier; every trial is adversarially
trained with ``AdversarialModel`` and scored by its validation accuracy under
``eval_attack`` (``val_adv_accuracy``, maximised). Each trial also records
its cost: training seconds, parameter count and images per second.
"""

import time

import keras
import keras_tuner

from tf_advscale.models import count_params, resnet
from tf_advscale.models.resnet import blocks_for
from tf_advscale.training import AdversarialModel

OBJECTIVE = keras_tuner.Objective("val_adv_accuracy", direction="max")
TUNERS = ("random", "bayesian", "hyperband")


class DepthSearch(keras_tuner.HyperModel):
    """A HyperModel over ResNet depth (blocks per stage) and width.

    Args:
        input_shape, num_classes: of the data.
        attack, eval_attack: training attack and the attack of the objective
            (specs or ``Attack`` objects, as ``AdversarialModel`` takes).
        depths: candidate CIFAR-style depths (each 6n + 2).
        widths: candidate width multipliers.
        norm, clean_portion, mixing, weight_decay: the training recipe.
        learning_rate, momentum: SGD (Nesterov) settings.
        seed: the AdversarialModel's attack seed.
        family: ``"cifar"`` (depth 6n+2: the search is over blocks per stage)
            or ``"imagenet"`` (depths from the table, e.g. 152-638).
    """

    def __init__(self, input_shape, num_classes, attack, eval_attack, depths=(8, 14, 20, 32, 56),
                 widths=(1.0,), norm="bn", clean_portion=0.0, mixing="joint", weight_decay=5e-4,
                 learning_rate=0.05, momentum=0.9, seed=0, family="cifar", **kwargs):
        super().__init__(**kwargs)
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
        self.family = family
        self.depths = sorted(set(depths))
        if not widths or any(not w or w <= 0 for w in widths):
            raise ValueError(f"widths must be positive numbers. Received: {widths}")
        if eval_attack is None:
            raise ValueError("eval_attack is needed: it defines the robustness objective")
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.attack, self.eval_attack = attack, eval_attack
        self.blocks = sorted({(d - 2) // 6 for d in depths})
        self.widths = sorted(set(float(w) for w in widths))
        self.norm, self.clean_portion, self.mixing = norm, clean_portion, mixing
        self.weight_decay, self.learning_rate, self.momentum = weight_decay, learning_rate, momentum
        self.seed = seed

    def build(self, hp):
        if self.family == "cifar":
            depth = 6 * hp.Choice("blocks_per_stage", self.blocks) + 2
        else:
            depth = hp.Choice("depth", self.depths)
        width = hp.Choice("width", self.widths)
        classifier = resnet(depth=depth, num_classes=self.num_classes, family=self.family,
                            input_shape=self.input_shape, norm=self.norm, width=width)
        model = AdversarialModel(classifier, attack=self.attack, eval_attack=self.eval_attack,
                                 clean_portion=self.clean_portion, mixing=self.mixing,
                                 weight_decay=self.weight_decay, seed=self.seed)
        model.compile(optimizer=keras.optimizers.SGD(self.learning_rate, momentum=self.momentum,
                                                     nesterov=True))
        return model

    def fit(self, hp, model, *args, **kwargs):
        """Trains one trial; returns the objective and the trial's cost."""
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
