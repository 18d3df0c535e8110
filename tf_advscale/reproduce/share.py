"""Runs shared with the zoo: a run whose recipe equals a zoo entry's training
recipe is not trained again; its run directory holds ``zoo.json``, a record
naming the entry, and the run's evaluations use the entry's model, loaded
(and its sha256 checked) as ``zoo.load`` loads it.

What defines a recipe is what decides the weights a run ends with: the
training data, the model, the training attack, the trainer, the optimizer
and its schedule, the seed, and the distribution strategy (it sets the
global batch). Compared after both configs are merged with the defaults, as
``runner.check_workdir`` compares an older run's. Ignored (``IGNORED``):

- ``eval_attack``, ``eval``, ``data.test_subset``, ``data.eval_split``: what
  validation and the end-of-training test measure. They choose
  ``best.keras`` and fill ``metrics.json``; the model after the last epoch
  (``final.keras``, which experiments evaluate and the zoo publishes) does
  not depend on them. Two exceptions, where the recipe keeps what matters:
  validation held out of the training images (``data.val_split: "train"``)
  takes ``eval.val_subset`` of them from training; and the
  catastrophic-overfitting monitor (``trainer.catastrophic_overfitting``)
  may roll the weights back on the first batch of validation, which
  ``eval.val_subset`` chooses, and ``data.eval_split`` where validation reads
  it.
- ``checkpoint``: how often training state is saved for resuming.
- ``threads``, ``data.num_parallel_calls``, ``trainer.jit_compile``,
  ``trainer.attack_jit_compile``, ``trainer.steps_per_execution``: how the
  same computation is scheduled.
- ``deterministic``: op determinism makes a rerun bit-identical; it does not
  change the computation. A zoo run trained without it is one draw of the
  recipe with its seed, as a deterministic run is another.

``model.norm_kwargs`` given at the layer's defaults (MixBN's
``separate_stats=True``) equal the same kwargs left out.
"""

import inspect
import json
import os

from tf_advscale.config import ConfigError, differences, merge
from tf_advscale.files import to_json, write_json

RECORD = "zoo.json"
IGNORED = ("eval_attack", "eval", "checkpoint", "threads", "deterministic",
           "data.test_subset", "data.eval_split", "data.num_parallel_calls",
           "trainer.jit_compile", "trainer.attack_jit_compile", "trainer.steps_per_execution")


def _norm_defaults(norm):
    from tf_advscale.layers import mixbn, norms
    fn = mixbn.MixBN.__init__ if norm == "mixbn" else norms.NORMS.get(norm)
    if fn is None:
        return {}
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def recipe(config):
    """The part of a full run config that defines its recipe (see the module
    doc), JSON-normalised."""
    c = json.loads(json.dumps(merge(config), default=to_json))
    validation = {"val_subset": c["eval"]["val_subset"], "eval_split": c["data"]["eval_split"]}
    held_out = c["data"]["val_split"] == "train"
    keep = (["val_subset"] if held_out else []) + \
        ((["val_subset"] + ([] if held_out else ["eval_split"]))
         if c["trainer"]["catastrophic_overfitting"] else [])
    for key in IGNORED:
        section, _, leaf = key.partition(".")
        if leaf:
            c[section].pop(leaf, None)
        else:
            c.pop(section, None)
    if keep:
        c["validation_that_decides_weights"] = {k: validation[k] for k in sorted(set(keep))}
    model = c["model"]
    defaults = _norm_defaults(model["norm"])
    model["norm_kwargs"] = {k: v for k, v in model["norm_kwargs"].items()
                            if k not in defaults or defaults[k] != v}
    return c


def _leaves(recipe):
    return {k: {} if v is None else v for k, v in recipe.items()}


def _entries():
    """``(name, metadata)`` of every zoo entry with a training recipe."""
    from tf_advscale import zoo
    for name in zoo.list_models():
        try:
            meta = zoo.info(name)
        except zoo.ZooError:
            continue  # a broken entry is no one's recipe; zoo list reports it
        if (meta.get("recipe") or {}).get("config"):
            yield name, meta


def compared(config, ignore=()):
    """``(name, metadata, differences)`` for each zoo entry with a recipe this
    version reads: where its recipe differs from ``config``'s, with the
    top-level keys ``ignore`` (e.g. ``("seed",)``) taken as equal."""
    # A section left out (standard training's attack: None) differs at each
    # of the other's leaves, so that the closest entry is the likeliest recipe.
    mine = merge(config)
    same = {k: mine[k] for k in ignore}
    mine = _leaves(recipe(mine))
    for name, meta in _entries():
        try:
            theirs = _leaves(recipe({**meta["recipe"]["config"], **same}))
        except ConfigError:
            continue  # a recipe with keys this version does not know
        yield name, meta, sorted(differences(theirs, mine))


def closest(config):
    """``(name, differences)`` of the zoo entry whose recipe differs least from
    ``config``'s (no differences: the run is shared; of equally close ones,
    the first listed), or ``(None, [])`` when no entry has a recipe."""
    best = (None, None)
    for name, _, diff in compared(config):
        if best[1] is None or len(diff) < len(best[1]):
            best = (name, diff)
    return best[0], best[1] or []


def would_link(path, config, nearest=None):
    """The zoo entry ``link(path, config)`` would link ``path`` to: the entry
    whose recipe equals ``config``'s, where training of ``path`` never started
    here (no ``metrics.json``, ``state`` or ``final.keras``) and it has no
    record yet; else None. ``nearest``: ``closest(config)`` where the caller
    has it already."""
    if record(path) or any(os.path.exists(os.path.join(path, n))
                           for n in ("metrics.json", "state", "final.keras")):
        return None
    name, diff = nearest or closest(config)
    return None if name is None or diff else name


def link(path, config):
    """Writes ``path``'s record of the zoo entry whose recipe equals
    ``config``'s and returns the entry's name; None (nothing written) when no
    entry does. Only a run directory where training never started is linked."""
    from tf_advscale import zoo
    name = would_link(path, config)
    if name is None:
        return None
    meta = zoo.info(name)
    theirs = json.loads(json.dumps(merge(meta["recipe"]["config"]), default=to_json))
    mine = json.loads(json.dumps(merge(config), default=to_json))
    os.makedirs(path, exist_ok=True)
    write_json(os.path.join(path, RECORD), {
        "entry": name, "sha256": meta["source"]["sha256"],
        "train_seconds": (meta.get("training") or {}).get("train_seconds"),
        "ignored_differences": sorted(differences(theirs, mine)),
        "why": "the entry's recipe equals this run's (tf_advscale.reproduce.share)"})
    return name


def record(path):
    """The zoo record of run directory ``path``, or None."""
    p = os.path.join(path, RECORD)
    return json.load(open(p)) if os.path.exists(p) else None


def check(path, config):
    """Refuses a shared run directory whose entry's recipe no longer equals
    ``config``'s (the config was edited since), as ``runner.check_workdir``
    refuses a trained one."""
    from tf_advscale import zoo
    rec = record(path)
    diff = sorted(differences(recipe(zoo.info(rec["entry"])["recipe"]["config"]),
                              recipe(config)))
    if diff:
        raise ConfigError(f"Run directory {path} shares zoo entry {rec['entry']!r}, whose "
                          f"recipe differs from this run's at {', '.join(diff[:5])}; delete "
                          "that directory to train it instead")


def run_model(path, route=None):
    """The classifier of run directory ``path``: its ``final.keras``, or the
    model of the zoo entry it shares, verified as ``zoo.load`` verifies it and
    refused if the entry's file is not the one the record names."""
    from tf_advscale import evaluate as ev_lib
    from tf_advscale import zoo
    rec = record(path)
    if rec is None:
        return ev_lib.resolve_model(os.path.join(path, "final.keras"), route)
    model, meta = zoo.load(rec["entry"], route)
    if meta["source"]["sha256"] != rec["sha256"]:
        raise zoo.ZooError(f"{rec['entry']}: its model has sha256 {meta['source']['sha256']}, "
                           f"not the {rec['sha256']} that {path}/{RECORD} was evaluated with; "
                           "delete that directory's evals/ and record to use the new one")
    return model


def autoattack(path, route, n, epsilon, split, planning_config=None):
    """The AutoAttack result that the zoo entry run directory ``path`` shares
    (its record, ``link``; when planning, the entry ``would_link`` of
    ``planning_config``) has made on MixBN ``route`` (None: its one route),
    where that is the evaluation reproduce would make: the standard AutoAttack
    at ``epsilon`` (L-inf) on the ``n`` test images of the seed-0 draw
    (``data.load(..., subset=n, seed=0)``) of the recipe's own data (no
    ``--source``/``--path`` override), through the moving statistics. As
    ``plan.evaluate_run`` returns results, with ``entry`` and ``from`` naming
    the record; None where the entry has no such result, or ``path`` shares
    no entry. The attack's settings and images are the same; its random draws
    are the entry's (its batches of ``--batch-size``, PGD-20 and APGD-CE run
    beside it), so the number is one draw of the same evaluation, as another
    seed's would be. An entry whose model is not the one the record names is
    refused, as ``run_model`` refuses it."""
    from tf_advscale import zoo
    rec = record(path)
    if rec is None and planning_config is not None:
        name = would_link(path, planning_config)
        rec = name and {"entry": name, "sha256": None}
    if not rec:
        return None
    try:
        meta = zoo.info(rec["entry"])
    except zoo.ZooError:
        return None  # a broken or removed entry: evaluated here if its model loads
    if rec["sha256"] is not None and meta["source"]["sha256"] != rec["sha256"]:
        raise zoo.ZooError(f"{rec['entry']}: its model has sha256 {meta['source']['sha256']}, "
                           f"not the {rec['sha256']} that {path}/{RECORD} was evaluated with; "
                           "delete that directory's evals/ and record to use the new one")
    aa = (meta.get("evaluation") or {}).get("autoattack") or {}
    threat = meta.get("threat_model") or {}
    eps = threat.get("epsilon_float")
    r = zoo.autoattack_results(meta, route or "default") or {}
    numbers = [r.get(k) for k in ("clean", "autoattack")]
    if (split != "test" or aa.get("test_images") != n or aa.get("subset_seed") != 0
            or aa.get("data_override") or str(threat.get("norm", "")).lower() != "linf"
            or not isinstance(eps, (int, float)) or abs(eps - epsilon) > 1e-9
            or r.get("n") != n or not all(isinstance(v, (int, float)) for v in numbers)):
        return None
    return {"clean": r["clean"], "autoattack": r["autoattack"],
            **{f"autoattack/{k}": v for k, v in (r.get("after_each") or {}).items()},
            "n": n, "seconds": None, "entry": rec["entry"],
            "from": f"zoo entry {rec['entry']}'s AutoAttack record ({aa.get('command')}, "
                    f"{aa.get('date')})"}
