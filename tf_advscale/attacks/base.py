"""Attacks: objects behind one interface, shared by training and evaluation.

    adv = attack(model_fn, images, labels, target=None, seed=None)

``model_fn`` maps images in [0, 1] to logits; the caller decides which BN
mode / MixBN route it uses (see ``AdversarialModel.attack_model_fn``). An
attack only reads the model: it never updates weights or BN statistics.
Epsilon and step size are in [0, 1] pixel units; outputs are clipped to
``[clip_min, clip_max]``.

``seed``: None draws random starts and targets from TensorFlow's stateful
generators (seeded by ``keras.utils.set_random_seed``); a stateless seed
(two integers, e.g. ``[run_seed, step]``) makes the call a pure function of
its inputs, which is what a resumed or repeated run needs.
"""

import math

import keras
import tensorflow as tf

NORMS = ("linf", "l2")


def register_attack(cls):
    """Makes an Attack class serializable by Keras (it is saved in a model's config)."""
    return keras.saving.register_keras_serializable(package="tf_advscale")(cls)


def _check_number(name, value, low=0.0, high=None, inclusive_low=True):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value >= low if inclusive_low else value > low
        ok = ok and (high is None or value <= high)
    if not ok:
        bound = f"{'>=' if inclusive_low else '>'} {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name} must be a number {bound}. Received: {name}={value!r}")


class Attack:
    """Base class. Subclasses implement ``perturb``."""

    def __call__(self, model_fn, images, labels, target=None, seed=None):
        images = tf.convert_to_tensor(images)
        if images.dtype != tf.float32:
            images = tf.cast(images, tf.float32)
        labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
        if seed is None:
            return self.perturb(model_fn, images, labels, target)
        return self.perturb(model_fn, images, labels, target, seed=tf.cast(seed, tf.int64))

    def perturb(self, model_fn, images, labels, target=None, seed=None):
        raise NotImplementedError

    def stage_names(self):
        """The stages an evaluation reports apart, in order: AutoAttack's
        attacks, or the steps at which a PGD reads its trajectory. () for an
        attack of one stage (most)."""
        return ()

    def stages(self, model_fn, images, labels, seed=None):
        """(adversarial images, {stage name: bool per image, classified
        correctly after that stage}); for attacks with ``stage_names``."""
        raise NotImplementedError(f"{type(self).__name__} has no stages")

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(repr(self))


@register_attack
class NoAttack(Attack):
    """Returns the images unchanged (standard training / clean evaluation)."""

    def perturb(self, model_fn, images, labels, target=None, seed=None):
        return images


@register_attack
class UniformNoise(Attack):
    """Random noise of size epsilon: the baseline every attack must beat.
    L-inf: a random sign per pixel; L2: a random direction (Gaussian,
    normalised) of L2 norm epsilon."""

    def __init__(self, epsilon=8 / 255, seed=None, norm="linf"):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}. Received: norm={norm!r}")
        self.epsilon = float(epsilon)
        self.seed = seed
        self.norm = norm

    def get_config(self):
        # The L-inf config (which saved evaluations fingerprint) is as before L2.
        return {"epsilon": self.epsilon, "seed": self.seed,
                **({"norm": self.norm} if self.norm != "linf" else {})}

    def perturb(self, model_fn, images, labels, target=None, seed=None):
        if self.norm == "l2":
            d = (normal(tf.shape(images), seed) if seed is not None
                 else tf.random.normal(tf.shape(images), seed=self.seed))
            return tf.clip_by_value(images + self.epsilon * _unit_l2(d), 0.0, 1.0)
        if seed is not None:
            noise = tf.sign(tf.random.stateless_uniform(tf.shape(images), seed, -1.0, 1.0))
        else:
            noise = tf.sign(tf.random.uniform(tf.shape(images), -1.0, 1.0, seed=self.seed))
        return tf.clip_by_value(images + self.epsilon * noise, 0.0, 1.0)


def fold_seed(seed, salt):
    """A new stateless seed from ``seed`` (two ints) and the integer ``salt``."""
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64),
                                                   tf.cast(salt, tf.int64))


def uniform(shape, seed=None, minval=0.0, maxval=1.0, dtype=tf.float32):
    """``tf.random.uniform``, or its stateless twin when ``seed`` is given."""
    if seed is None:
        return tf.random.uniform(shape, minval, maxval, dtype=dtype)
    return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=dtype)


def normal(shape, seed=None):
    """``tf.random.normal``, or its stateless twin when ``seed`` is given."""
    if seed is None:
        return tf.random.normal(shape)
    return tf.random.stateless_normal(shape, seed)


def random_targets(labels, num_classes, seed=None):
    """A uniformly random wrong class per example (the paper's target);
    ``seed``: None (stateful) or a stateless seed."""
    offset = uniform(tf.shape(labels), seed, 1, num_classes, dtype=tf.int32)
    return (labels + offset) % num_classes


def true_and_best_other(logits, labels):
    """Per example: the logit of ``labels`` and the largest other logit."""
    logits = tf.cast(logits, tf.float32)
    onehot = tf.one_hot(labels, tf.shape(logits)[-1])
    own = tf.reduce_sum(logits * onehot, -1)
    other = tf.reduce_max(logits - 1e9 * onehot, -1)
    return own, other


def _per_example_norm(x, norm):
    axes = list(range(1, len(x.shape)))
    if norm == "linf":
        return tf.reduce_max(tf.abs(x), axis=axes)
    return tf.sqrt(tf.reduce_sum(tf.square(x), axis=axes))


def _expand(v, x):
    return tf.reshape(v, [-1] + [1] * (len(x.shape) - 1))


def _unit_l2(v):
    """Each example of ``v`` scaled to L2 norm 1 (a zero example stays zero)."""
    return v / _expand(tf.maximum(_per_example_norm(v, "l2"), 1e-12), v)


def _into_l2_ball(d, epsilon):
    """Each example of ``d`` scaled down onto the L2 ball of radius
    ``epsilon`` where it lies outside; left alone inside."""
    n = _per_example_norm(d, "l2")
    return d * _expand(tf.minimum(1.0, epsilon / tf.maximum(n, 1e-12)), d)


def on_subset(mask, run, x, *rows):
    """Runs ``run(x[mask], *(r[mask] for r in rows)) -> (images, ok)`` only on
    the rows where ``mask`` holds, as AutoAttack attacks only the images still
    unbroken; skipped when there are none. Returns the images scattered back
    into ``x`` where ``ok`` is False (their attack succeeded) and the
    per-row ``ok`` (True outside the mask)."""
    idx = tf.where(mask)[:, 0]
    sub = [tf.gather(r, idx) for r in (x,) + rows]

    def attack():
        return run(*sub)

    def nothing():
        return sub[0], tf.ones(tf.shape(idx), tf.bool)

    found, ok = tf.cond(tf.size(idx) > 0, attack, nothing)
    broken = tf.logical_not(ok)
    out = tf.tensor_scatter_nd_update(x, idx[:, None],
                                      tf.where(_expand(broken, found), found, sub[0]))
    fell = tf.scatter_nd(idx[:, None], tf.cast(broken, tf.int32),
                         tf.shape(mask, out_type=tf.int64)[:1])
    return out, tf.equal(fell, 0)


def over_runs(n_runs, one_run, state, loop=True):
    """``state = one_run(i, *state)`` for i in ``range(n_runs)``: the runs
    of an attack (APGD-T's targets, restarts). With ``loop``, one
    ``tf.while_loop`` (``i`` a tensor), so the run is traced once, not
    ``n_runs`` times (tracing AutoAttack on a ResNet-20 here: 30 s of CPU
    unrolled, 11 s looped). Without, unrolled in Python (``i`` an int), for
    a run that needs a Python integer (an op-level seed). With no seed at
    all, the looped runs draw from one stateful op, so their random starts
    are not the unrolled code's (a seeded call repeats bit for bit either
    way). A single run is never looped."""
    state = tuple(state)
    if not loop or n_runs <= 1:
        for i in range(n_runs):
            state = tuple(one_run(i, *state))
        return state
    out = tf.while_loop(lambda i, *_: i < n_runs,
                        lambda i, *s: (i + 1,) + tuple(one_run(i, *s)),
                        (tf.constant(0),) + state)
    return tuple(out[1:])


def _restart_seed(seed, i):
    """The stateless seed of a PGD's run ``i`` (its restarts), or None."""
    return None if seed is None else fold_seed(seed, 100 + i)


@register_attack
class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018), L-inf or L2.

    Args:
        epsilon: radius of the threat ball, in [0, 1] pixel units.
        step_size: step per iteration (pixel units; L2: step length).
        steps: iterations.
        norm: ``"linf"`` or ``"l2"``.
        targeted: attack toward a target class: the ``target`` passed to the
            call, or else a uniformly random wrong class (the paper's attacker).
        random_start: probability, per example, of starting at a uniformly
            random point of the ball instead of the clean image (the paper:
            0.8; Madry: 1.0; FGSM: 0.0).
        restarts: independent runs; an example counts as broken if any run
            breaks it (each run's adversarial image is kept if it succeeds).
        num_classes: needed for random targets; read from the logits if None.
        clip_min, clip_max: valid image range.
        loss: ``"ce"`` (cross-entropy) or ``"cw"`` (logit margin).
        checkpoints: step counts below ``steps`` at which ``stages`` also
            reports which images the iterate leaves classified correctly: the
            accuracy under PGD-k for each k, read off one trajectory (the same
            random start and target), for the cost of the longest plus one
            forward pass per checkpoint. Each one is what a separate
            ``steps=k`` run given the same seed gives. Needs ``restarts=1``.
    """

    # Set by single-step variants only (N-FGSM): the random start's radius in
    # epsilons, and whether iterates are projected back to the ball.
    start_scale = 1.0
    project = True

    def __init__(self, epsilon=8 / 255, step_size=2 / 255, steps=10, norm="linf",
                 targeted=False, random_start=1.0, restarts=1, num_classes=None,
                 clip_min=0.0, clip_max=1.0, loss="ce", checkpoints=()):
        _check_number("epsilon", epsilon, 0.0, None)
        if norm == "linf" and epsilon > 1.0:
            raise ValueError(f"epsilon is in [0, 1] pixel units for linf; {epsilon} would "
                             f"cover the whole image range (did you mean {epsilon}/255?). "
                             f"Received: epsilon={epsilon!r}")
        _check_number("step_size", step_size, 0.0, None)
        if norm == "linf" and step_size > 1.0:
            raise ValueError(f"step_size is in [0, 1] pixel units for linf; {step_size} would "
                             f"jump across the whole image range (did you mean {step_size}/255?). "
                             f"Received: step_size={step_size!r}")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"steps must be an int >= 0. Received: steps={steps!r}")
        if not isinstance(restarts, int) or restarts < 1:
            raise ValueError(f"restarts must be an int >= 1. Received: restarts={restarts!r}")
        _check_number("random_start", float(random_start), 0.0, 1.0)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}. Received: norm={norm!r}")
        if loss not in ("ce", "cw"):
            raise ValueError(f"loss must be 'ce' or 'cw'. Received: loss={loss!r}")
        if not clip_min < clip_max:
            raise ValueError(f"need clip_min < clip_max. Received: {clip_min}, {clip_max}")
        checkpoints = tuple(checkpoints)
        if checkpoints and (any(not isinstance(k, int) or isinstance(k, bool) for k in checkpoints)
                            or list(checkpoints) != sorted(set(checkpoints))
                            or not 0 < checkpoints[0] or not checkpoints[-1] < steps):
            raise ValueError(f"checkpoints must be increasing ints in [1, steps - 1] = "
                             f"[1, {steps - 1}]. Received: checkpoints={checkpoints!r}")
        if checkpoints and restarts != 1:
            raise ValueError(f"checkpoints read one trajectory, so they need restarts=1. "
                             f"Received: restarts={restarts!r}")
        self.checkpoints = checkpoints
        self.epsilon = float(epsilon)
        self.step_size = float(step_size)
        self.steps = steps
        self.norm = norm
        self.targeted = bool(targeted)
        self.random_start = float(random_start)
        self.restarts = restarts
        self.num_classes = num_classes
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)
        self.loss = loss

    def get_config(self):
        return {"epsilon": self.epsilon, "step_size": self.step_size, "steps": self.steps,
                "norm": self.norm, "targeted": self.targeted,
                "random_start": self.random_start, "restarts": self.restarts,
                "num_classes": self.num_classes, "clip_min": self.clip_min,
                "clip_max": self.clip_max, "loss": self.loss,
                # Only when set: saved evaluations fingerprint the config.
                **({"checkpoints": list(self.checkpoints)} if self.checkpoints else {})}

    def stage_names(self):
        """``step-k`` for each checkpoint and for ``steps``; () without checkpoints."""
        return tuple(f"step-{k}" for k in self.checkpoints + (self.steps,)) \
            if self.checkpoints else ()

    # -- pieces -------------------------------------------------------------

    def _project(self, delta):
        if self.norm == "linf":
            return tf.clip_by_value(delta, -self.epsilon, self.epsilon)
        return _into_l2_ball(delta, self.epsilon)

    def _random_delta(self, x, seed=None):
        s = [None] * 2 if seed is None else [fold_seed(seed, k) for k in (1, 2)]
        if self.norm == "linf":
            return uniform(tf.shape(x), s[0], -self.epsilon, self.epsilon)
        # Uniform in the L2 ball: direction ~ Gaussian, radius ~ eps * u^(1/d).
        g = normal(tf.shape(x), s[0])
        d = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
        r = self.epsilon * uniform(tf.shape(x)[:1], s[1]) ** (1.0 / d)
        return _unit_l2(g) * _expand(r, g)

    def _step(self, grad):
        if self.norm == "linf":
            return self.step_size * tf.sign(grad)
        return self.step_size * _unit_l2(grad)

    def _objective(self, logits, labels, target):
        """Per-example quantity to ascend."""
        logits = tf.cast(logits, tf.float32)
        if self.loss == "ce":
            if self.targeted:
                return -tf.keras.losses.sparse_categorical_crossentropy(target, logits, from_logits=True)
            return tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        own, other = true_and_best_other(logits, target if self.targeted else labels)
        return own - other if self.targeted else other - own

    def _success(self, logits, labels, target):
        pred = tf.argmax(logits, -1, output_type=tf.int32)
        return tf.equal(pred, target) if self.targeted else tf.not_equal(pred, labels)

    def _run(self, model_fn, x, labels, target, seed=None, record=()):
        """The last iterate; with ``record`` (step counts below ``steps``),
        also the iterate after each of them."""
        start = self._random_delta(x, seed)
        if self.start_scale != 1.0:
            start = self.start_scale * start
        if self.random_start < 1.0:
            use = uniform(tf.shape(x)[:1], None if seed is None else fold_seed(seed, 3)) \
                < self.random_start
            start = tf.where(_expand(use, x), start, tf.zeros_like(start))
        project = self._project if self.project else (lambda delta: delta)
        adv = tf.clip_by_value(x + project(start), self.clip_min, self.clip_max)

        def step(i, adv):
            with tf.GradientTape() as tape:
                tape.watch(adv)
                objective = self._objective(model_fn(adv), labels, target)
            grad = tape.gradient(objective, adv)
            if grad is None:  # the model hides its gradient: stay put
                grad = tf.zeros_like(adv)
            adv = adv + self._step(grad)
            adv = tf.clip_by_value(x + project(adv - x), self.clip_min, self.clip_max)
            return i + 1, tf.stop_gradient(adv)

        # Keras traces train steps without autograph: explicit while loops, one
        # per stretch between recorded steps (the same steps as one loop).
        iterates, i = [], tf.constant(0)
        for k in tuple(record) + (self.steps,):
            i, adv = tf.while_loop(lambda i, _, k=k: i < k, step, (i, adv))
            iterates.append(adv)
        return (adv, iterates[:-1]) if record else adv

    def _target(self, model_fn, images, labels, target, seed):
        if self.targeted and target is None:
            k = self.num_classes
            if k is None:
                k = tf.shape(model_fn(images[:1]))[-1]
            target = random_targets(labels, k, None if seed is None else fold_seed(seed, 0))
        return target

    def stages(self, model_fn, images, labels, seed=None):
        """(the last iterate, {``step-k``: classified correctly at step k})
        for each checkpoint k and for ``steps``: one trajectory."""
        if not self.checkpoints:
            raise ValueError("stages needs checkpoints; this PGD has none")
        target = self._target(model_fn, images, labels, None, seed)
        adv, iterates = self._run(model_fn, images, labels, target, _restart_seed(seed, 0),
                                  record=self.checkpoints)
        correct = [tf.equal(tf.argmax(model_fn(a), -1, output_type=tf.int32), labels)
                   for a in iterates + [adv]]
        return tf.stop_gradient(adv), dict(zip(self.stage_names(), correct))

    def perturb(self, model_fn, images, labels, target=None, seed=None):
        target = self._target(model_fn, images, labels, target, seed)
        best = self._run(model_fn, images, labels, target, _restart_seed(seed, 0))
        if self.restarts > 1:
            done = self._success(model_fn(best), labels, target)

            def restart(i, best, done):
                adv = self._run(model_fn, images, labels, target, _restart_seed(seed, i + 1))
                ok = self._success(model_fn(adv), labels, target)
                best = tf.where(_expand(tf.logical_and(ok, tf.logical_not(done)), adv), adv, best)
                return i + 1, best, tf.logical_or(done, ok)

            _, best, _ = tf.while_loop(lambda i, *_: i < self.restarts - 1, restart,
                                       (tf.constant(0), best, done))
        return tf.stop_gradient(best)


@register_attack
class FGSM(PGD):
    """One signed-gradient step of size ``step_size`` (default epsilon), from the
    clean image or -- with ``random_start=1.0`` and ``step_size=1.25*epsilon``,
    Wong et al. 2020's "fast adversarial training" -- from a random point.

    ``start_scale``: radius of the random start in epsilons; ``project``:
    whether the result is projected back to the epsilon ball. N-FGSM (de
    Jorge et al. 2022) starts in a ball of 2 epsilon, steps by epsilon and
    does not project: its training images lie up to 3 epsilon away, which is
    what keeps single-step training from overfitting catastrophically.
    """

    def __init__(self, epsilon=8 / 255, step_size=None, random_start=0.0, norm="linf",
                 targeted=False, num_classes=None, clip_min=0.0, clip_max=1.0, loss="ce",
                 start_scale=1.0, project=True):
        super().__init__(epsilon=epsilon, step_size=epsilon if step_size is None else step_size,
                         steps=1, norm=norm, targeted=targeted, random_start=random_start,
                         restarts=1, num_classes=num_classes, clip_min=clip_min,
                         clip_max=clip_max, loss=loss)
        _check_number("start_scale", start_scale, 0.0, None)
        if not isinstance(project, bool):
            raise ValueError(f"project must be True or False. Received: project={project!r}")
        self.start_scale = float(start_scale)
        self.project = project

    def get_config(self):
        c = super().get_config()
        del c["steps"], c["restarts"]
        c.update(start_scale=self.start_scale, project=self.project)
        return c


def fgsm_rs(epsilon=8 / 255, **kwargs):
    """FGSM with random start and step 1.25 epsilon (Wong et al. 2020)."""
    return FGSM(epsilon=epsilon, step_size=1.25 * epsilon, random_start=1.0, **kwargs)


def n_fgsm(epsilon=8 / 255, **kwargs):
    """N-FGSM (de Jorge et al. 2022): noise from the 2-epsilon ball, one
    signed step of epsilon, no projection to the epsilon ball."""
    kwargs = {"step_size": epsilon, "random_start": 1.0, "start_scale": 2.0,
              "project": False, **kwargs}
    return FGSM(epsilon=epsilon, **kwargs)


def paper_pgd(steps=30, train=True, num_classes=None):
    """The paper's attacker: targeted PGD toward a random wrong class,
    epsilon 16/255, step 1/255 (1.6/255 for 10 steps at evaluation); random
    start for 80% of training examples, always at evaluation."""
    step = 1.6 / 255 if (not train and steps == 10) else 1 / 255
    return PGD(epsilon=16 / 255, step_size=step, steps=steps, targeted=True,
               random_start=0.8 if train else 1.0, num_classes=num_classes)
