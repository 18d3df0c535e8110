"""The plan of one data set's experiments (runs, evaluations, seeds), and the
training and evaluation of its runs, each resumable and shared by every
experiment that needs it (and with the zoo: ``share``)."""

import contextlib
import dataclasses
import json
import os

from tf_advscale.reproduce import share
from tf_advscale.reproduce.stats import stat


@dataclasses.dataclass(frozen=True)
class Run:
    """One training recipe (trained once per seed)."""
    norm: str = "bn"
    clean_portion: float = 0.0
    depth: int = 0                    # 0: the plan's base depth
    standard: bool = False            # no attack: standard training
    alp: bool = False
    attack_bn: str = "inference"
    separate_stats: bool = True       # MixBN ablations
    separate_affine: bool = True

    def key(self, base_depth):
        depth = self.depth or base_depth
        if self.standard:
            return f"standard-d{depth}"
        norm = self.norm
        if norm == "mixbn" and not (self.separate_stats and self.separate_affine):
            norm += "_stats" if self.separate_stats else "_affine"
        key = f"{norm}-c{round(100 * self.clean_portion)}-d{depth}"
        if self.alp:
            key += "-alp"
        if self.attack_bn != "inference":
            key += f"-atkbn_{self.attack_bn}"
        return key


@dataclasses.dataclass(frozen=True)
class Eval:
    """One evaluation of a run: clean accuracy and the listed attacks."""
    attacks: tuple = ()
    route: str = None                 # MixBN route; None for other norms
    bn: str = "moving"                # "moving": inference BN; "batch": batch statistics
    n: int = None                     # test images (None: the plan's n)

    def key(self):
        parts = [self.route or "single", self.bn, f"n{self.n}"] + list(self.attacks)
        return "_".join(parts)


class Plan:
    """The reproduce config for one data set: runs, evaluations, seeds."""

    def __init__(self, config, dataset, workdir, seeds=None, results=None):
        datasets = config["datasets"]
        if dataset not in datasets:
            raise ValueError(f"Unknown dataset {dataset!r} for scale {config['scale']!r}: "
                             f"expected one of {sorted(datasets)}")
        self.config, self.dataset = config, dataset
        d = datasets[dataset]
        self.train, self.epsilon, self.eval = d["train"], float(d["epsilon"]), d["eval"]
        self.split = d["train"]["data"].get("eval_split", "test")  # imagenet2012: validation
        self.seeds = list(seeds if seeds is not None else config["seeds"])
        if not self.seeds:
            raise ValueError(f"seeds must not be empty. Received: {self.seeds}")
        self.base_depth = int(self.train["model"]["depth"])
        # A scale with a folder keeps its runs and results apart: its run keys
        # (depth 20, ...) may be another scale's with another recipe.
        folder = config.get("folder") or ""
        self.root = os.path.join(workdir, folder, dataset)  # trained runs
        self.results = os.path.join(results or workdir, folder, dataset)  # tables and plots
        self._data = {}
        # What the current experiment used: run directories and evaluation
        # files, for its compute cost (see ``compute_cost``).
        self.used_runs, self.used_evals = set(), set()
        # ``estimate.planned_work``: {"runs": {path: config}, "evals": {path:
        # Eval}, "shared_evals": {path: source}}
        # while the experiments are only listed, not computed.
        self.planned = None

    def experiment_seeds(self, name):
        """The seeds experiment ``name`` runs: the first ``experiment_seeds[name]``
        of the plan's (a scale where two seeds of it do not fit), else all."""
        k = (self.config.get("experiment_seeds") or {}).get(name)
        return self.seeds[:k] if k else self.seeds

    @contextlib.contextmanager
    def seeds_of(self, name):
        """``self.seeds`` is ``experiment_seeds(name)`` inside the block."""
        saved, self.seeds = self.seeds, self.experiment_seeds(name)
        try:
            yield self.seeds
        finally:
            self.seeds = saved

    def run_dir(self, run, seed):
        return os.path.join(self.root, "runs", run.key(self.base_depth), f"seed{seed}")

    def train_config(self, run, seed):
        import copy

        from tf_advscale import config as config_lib
        c = copy.deepcopy(self.train)
        c["seed"] = int(seed)
        c["model"]["depth"] = run.depth or self.base_depth
        c["model"]["norm"] = run.norm
        if run.norm == "mixbn":
            c["model"]["norm_kwargs"] = {"separate_stats": run.separate_stats,
                                         "separate_affine": run.separate_affine}
        t = c.setdefault("trainer", {})
        t.update(clean_portion=run.clean_portion, attack_bn=run.attack_bn,
                 mixing="mixbn" if run.norm == "mixbn" else "joint",
                 alp_weight=self.config["alp_weight"] if run.alp else 0.0)
        if run.standard:
            c["attack"] = None
            c["eval_attack"] = None
            t["clean_portion"] = 0.0
        return config_lib.merge(c)

    def eval_tag(self):
        """A short hash of what every evaluation shares (epsilon, split,
        batch size): evaluations saved under other settings are not reused."""
        import hashlib
        key = json.dumps([self.epsilon, self.split, self.eval["batch_size"]])
        return hashlib.sha256(key.encode()).hexdigest()[:8]

    def test_data(self, n):
        from tf_advscale import data as data_lib
        if n not in self._data:
            d = self.train["data"]
            x, y, _ = data_lib.as_numpy(d["dataset"], self.split, source=d.get("source"),
                                        path=d.get("path"), subset=n, seed=0)
            self._data[n] = (x, y)
        return self._data[n]


# -- training and evaluation -------------------------------------------------------------

def train(plan, run, seed):
    """Trains (or resumes, or reuses, or shares with the zoo) one run; returns
    its run directory."""
    from tf_advscale import runner
    path = plan.run_dir(run, seed)
    plan.used_runs.add(path)
    config = plan.train_config(run, seed)
    if plan.planned is not None:
        plan.planned["runs"].setdefault(path, config)
    elif os.path.exists(os.path.join(path, "metrics.json")):
        # A finished run is reused only if it was trained with this config.
        runner.check_workdir(path, config)
    elif share.record(path):
        share.check(path, config)
    elif share.link(path, config):
        print(f"[reproduce] {os.path.relpath(path, plan.root)}: shared with zoo entry "
              f"{share.record(path)['entry']} (same recipe), not trained", flush=True)
    else:
        print(f"[reproduce] training {os.path.relpath(path, plan.root)}", flush=True)
        import keras
        # Layer names (hence checkpoint variable paths) as in a fresh process,
        # so that a run resumed by another command finds its checkpoint.
        keras.backend.clear_session()
        runner.run(config, path, verbose=2)
    return path


class BatchStatistics:
    """Calls a Keras model with BN in training mode (batch statistics)
    without updating its moving statistics: the "consistent BN" test-time
    mode."""

    def __init__(self, model):
        self.model = model

    def __call__(self, images, training=False):
        m = self.model
        logits, _ = m.stateless_call([v.value for v in m.trainable_variables],
                                     [v.value for v in m.non_trainable_variables],
                                     images, training=True)
        return logits


def evaluate_run(plan, run, seed, ev):
    """Clean and attacked accuracy of one run (resumable); a dict of floats."""
    from tf_advscale import attacks as attacks_lib
    from tf_advscale import evaluate as ev_lib
    path = train(plan, run, seed)
    n = ev.n or plan.eval["n"]
    ev = dataclasses.replace(ev, n=n)
    key = f"{ev.key()}_{plan.eval_tag()}"
    out_path = os.path.join(path, "evals", key + ".json")
    plan.used_evals.add(out_path)
    shared = _shared_autoattack(plan, run, seed, path, ev) \
        if not os.path.exists(out_path) else None
    if plan.planned is not None:
        if shared:
            plan.planned["shared_evals"][out_path] = shared["from"]
        else:
            plan.planned["evals"].setdefault(out_path, ev)
        made = {a: attacks_lib.make(a, plan.epsilon) for a in ev.attacks}
        return {"clean": 0.0, **{k: 0.0 for k in ev_lib.result_keys(made)}, "n": n}
    if os.path.exists(out_path):
        return json.load(open(out_path))
    if shared:
        from tf_advscale.files import write_json
        print(f"[reproduce] {os.path.relpath(out_path, plan.root)}: {shared['from']}, "
              "not attacked again", flush=True)
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        write_json(out_path, shared)
        return shared
    import keras

    keras.backend.clear_session()  # graphs of earlier evaluations are not kept
    model = share.run_model(path, ev.route)
    x, y = plan.test_data(n)
    num_classes = int(model.output.shape[-1])
    attacks = {a: attacks_lib.make(a, plan.epsilon, num_classes) for a in ev.attacks}
    fn_model = BatchStatistics(model) if ev.bn == "batch" else model
    settings = {"eval": dataclasses.asdict(ev), "epsilon": plan.epsilon, "seed": seed,
                "attacks": {k: repr(v) for k, v in attacks.items()}}
    correct, seconds = ev_lib.run_attacks(fn_model, x, y, attacks, plan.eval["batch_size"],
                                          seed=seed, workdir=os.path.join(path, "evals", key),
                                          settings=settings, verbose=False,
                                          correct_only=ev.bn != "batch")
    result = {k: float(v.mean()) for k, v in correct.items()}
    # The attacks' time, with batches an interrupted call saved.
    result.update(n=int(len(y)), seconds=round(sum(seconds.values()), 1))
    from tf_advscale.files import write_json
    write_json(out_path, result)
    return result


def _shared_autoattack(plan, run, seed, path, ev):
    """The zoo's AutoAttack result (``share.autoattack``) of a run shared with
    a zoo entry, where ``ev`` is that evaluation; else None."""
    if ev.attacks != ("autoattack",) or ev.bn != "moving":
        return None
    planning = plan.train_config(run, seed) if plan.planned is not None else None
    return share.autoattack(path, ev.route, ev.n, plan.epsilon, plan.split, planning)


def over_seeds(plan, run, ev, metric):
    """``metric`` (in %) of ``run`` under ``ev`` for every seed, trained and
    evaluated as needed."""
    return [100 * evaluate_run(plan, run, s, ev)[metric] for s in plan.seeds]


def accuracies(plan, run, ev):
    """Clean and robust accuracy (%) of ``run`` under ``ev``'s one attack,
    over seeds."""
    a, = ev.attacks
    return {"clean": stat(over_seeds(plan, run, ev, "clean")),
            "robust": stat(over_seeds(plan, run, ev, a))}
