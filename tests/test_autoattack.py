"""FAB-T, the AutoAttack composition and the one attack registry."""

import numpy as np
import pytest
import tensorflow as tf

from tf_advscale import attacks
from tf_advscale.attacks.autoattack import STAGES, AutoAttack
from tf_advscale.attacks.fab import FAB, project_to_hyperplane
from tf_advscale.attacks.square import Square, pseudo_gaussian


@pytest.fixture(scope="module")
def trained_small(trained, sample):
    """The trained sample model and 64 test images."""
    x, y = sample
    return trained, x[:64], y[:64].astype("int32")


def _linear(n=24, k=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.3, 0.7, size=(n, 4, 4, 3)).astype("float32")
    w = (rng.normal(size=(48, k)) * 0.5).astype("float32")
    c = rng.normal(size=k).astype("float32")
    fn = lambda z: tf.reshape(z, [tf.shape(z)[0], -1]) @ w + c  # noqa: E731
    logits = fn(x).numpy()
    return x, logits.argmax(1).astype("int32"), w, logits, fn


def _minimal_distance(x, y, w, logits, norm):
    """For a linear classifier: the distance to the nearest decision boundary,
    min over classes j of margin_j / ||w_j - w_y||_dual (no box constraint binds
    here: images in [0.3, 0.7], perturbations far smaller)."""
    n, k = logits.shape
    best = np.full(n, np.inf)
    for j in range(k):
        diff = w[:, j][None] - w[:, y].T
        dual = np.abs(diff).sum(1) if norm == "linf" else np.sqrt((diff ** 2).sum(1))
        margin = logits[np.arange(n), y] - logits[:, j]
        with np.errstate(divide="ignore", invalid="ignore"):  # j == y: 0 / 0, not used
            best = np.where(j == y, best, np.minimum(best, margin / dual))
    return best


def _reference_apgd_ce(x, y, w1, w2, eps, steps, start, norm="linf"):
    """APGD-CE (L-inf or L2), one run, written from Croce & Hein (2020)'s published
    algorithm (auto-attack's ``attack_single_run``) in numpy for the network
    ``tanh(x w1) w2``: the momentum step, the checkpoints (window 0.22 n
    shrinking by 0.03 n to 0.06 n), halving on oscillation or a stalled best
    loss with a restart from the best point. Returns (best point, still
    correct)."""
    n = len(x)

    def f(z):
        h = np.tanh(z.reshape(n, -1) @ w1)
        logits = h @ w2
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        loss = -np.log(p[np.arange(n), y])
        p[np.arange(n), y] -= 1
        grad = ((p @ w2.T) * (1 - h ** 2)) @ w1.T
        return loss, grad.reshape(z.shape), logits.argmax(1) == y

    def l2(v):
        return np.sqrt((v ** 2).reshape(n, -1).sum(1)).reshape(n, 1, 1, 1)

    def proj(z):
        if norm == "linf":
            return np.clip(np.clip(z, x - eps, x + eps), 0, 1)
        d = z - x
        return np.clip(x + d / np.maximum(l2(d), 1e-12) * np.minimum(eps, l2(d)), 0, 1)

    def ascent(g):
        return np.sign(g) if norm == "linf" else g / np.maximum(l2(g), 1e-12)

    k, k_min, k_decr = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), \
        max(int(0.03 * steps), 1)
    adv = start.astype(np.float64)
    loss, grad, acc = f(adv)
    x_best, grad_best, loss_best = adv.copy(), grad.copy(), loss.copy()
    step = np.full((n, 1, 1, 1), 2 * eps)
    old, counter, loss_steps = adv.copy(), 0, np.zeros((steps, n))
    reduced_last, loss_best_last = np.ones(n, bool), loss_best.copy()
    for i in range(steps):
        momentum, old = adv - old, adv.copy()
        a = 0.75 if i > 0 else 1.0
        z = proj(adv + step * ascent(grad))
        adv = proj(adv + (z - adv) * a + momentum * (1 - a))
        loss, grad, pred = f(adv)
        acc &= pred
        loss_steps[i] = loss
        better = loss > loss_best
        x_best[better], grad_best[better], loss_best[better] = adv[better], grad[better], \
            loss[better]
        counter += 1
        if counter == k:
            # loss_steps[-1] is the zeros row at the first check, as there.
            ups = sum(loss_steps[i - j] > loss_steps[i - j - 1] for j in range(k))
            halve = (ups <= k * 0.75) | (~reduced_last & (loss_best_last >= loss_best))
            reduced_last, loss_best_last = halve.copy(), loss_best.copy()
            step[halve] /= 2
            adv[halve], grad[halve] = x_best[halve], grad_best[halve]
            k, counter = max(k - k_decr, k_min), 0
    return x_best, acc


def test_apgd_follows_the_published_algorithm_step_for_step():
    """Our APGD-CE (one L2 run from its own random start) against the numpy
    reference above on a random two-layer tanh network: the same images
    survive, at the same best points. L2 and a strongly curved network:
    there the momentum term changes the best points (a momentum that was
    always zero put them 0.06 away); under L-inf on a toy model the sign
    steps pin the iterates to the box's corners and hide it."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0.2, 0.8, size=(32, 4, 4, 3)).astype("float32")
    w1 = rng.normal(size=(48, 32)).astype("float32") * 4.0
    w2 = rng.normal(size=(32, 10)).astype("float32")
    fn = lambda z: tf.tanh(tf.reshape(z, [tf.shape(z)[0], -1]) @ w1) @ w2  # noqa: E731
    y = fn(x).numpy().argmax(1).astype("int32")
    eps, steps = 0.1, 30
    attack = attacks.APGD(eps, steps, norm="l2")
    seed = tf.constant([7, 0], tf.int64)
    start = attack._start(tf.constant(x), seed).numpy()
    ours, ok = attack.run(fn, tf.constant(x), tf.constant(y), seed=seed)
    best, acc = _reference_apgd_ce(x, y, w1.astype(np.float64), w2.astype(np.float64), eps,
                                   steps, start, norm="l2")
    assert 0 < acc.sum() < len(y), acc.sum()  # some survive, some do not: both paths run
    np.testing.assert_array_equal(ok.numpy(), acc)
    np.testing.assert_allclose(ours.numpy()[acc], best[acc], atol=2e-4)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_t_finds_the_minimal_perturbation_of_a_linear_model(norm):
    x, y, w, logits, fn = _linear()
    true = _minimal_distance(x, y, w, logits, norm)
    order = np.argsort(-logits, 1)
    fab = FAB(epsilon=1.0, norm=norm, n_target_classes=3)
    found = np.full(len(x), np.inf)
    for rank in (1, 2, 3):
        _, dist = fab.run(fn, tf.constant(x), tf.constant(y), tf.constant(order[:, rank]))
        found = np.minimum(found, dist.numpy())
    assert (found >= true * (1 - 1e-4)).all()  # nothing closer than the boundary exists
    assert (found <= 1.05 * true).all(), (found / true).max()
    # Through perturb at epsilon = the median minimal radius: every image
    # breakable within epsilon / 1.05 is broken, none beyond epsilon.
    eps = float(np.median(true))
    adv = FAB(epsilon=eps, norm=norm, n_target_classes=3)(fn, x, y).numpy()
    fooled = fn(adv).numpy().argmax(1) != y
    assert fooled[1.05 * true <= eps].all() and not fooled[true > eps].any()
    assert 0 < fooled.sum() < len(x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_outputs_stay_in_the_box_and_the_ball(norm, trained_small):
    model, x, y = trained_small
    eps = 0.1 if norm == "linf" else 1.0
    fn = lambda z: model(z, training=False)  # noqa: E731
    adv = FAB(epsilon=eps, steps=20, norm=norm, n_target_classes=3)(fn, x, y).numpy()
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    d = (adv - x).reshape(len(x), -1)
    size = np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)
    assert size.max() <= eps * (1 + 1e-5)
    assert (fn(adv).numpy().argmax(1) != y).sum() > (fn(x).numpy().argmax(1) != y).sum()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_hyperplane_projection_against_bisection(norm):
    """The closed-form projection equals a numerical solution of
    min ||d|| s.t. <w, t + d> = b, t + d in [0, 1]."""
    rng = np.random.default_rng(3)
    t = rng.uniform(size=(50, 30)).astype("float32")
    w = rng.normal(size=(50, 30)).astype("float32")
    w[:, :3] = 0.0  # coordinates the plane ignores stay put
    b = (w * t).sum(1) + rng.normal(size=50).astype("float32") * 2
    d = project_to_hyperplane(tf.constant(t), tf.constant(w), tf.constant(b), norm).numpy()
    assert (t + d >= -1e-6).all() and (t + d <= 1 + 1e-6).all()
    assert (d[:, :3] == 0).all()
    for i in range(50):
        c = (w[i] * t[i]).sum() - b[i]
        v = -np.sign(c) * np.sign(w[i]) if norm == "linf" else -np.sign(c) * w[i]
        lo_box, hi_box = -t[i], 1 - t[i]

        def move(lam):
            return np.clip(lam * v, lo_box, hi_box)

        need = -c
        reach = (w[i] * move(1e6)).sum()
        if abs(reach) < abs(need):  # out of reach: every coordinate at its face
            np.testing.assert_allclose(d[i], move(1e6), atol=1e-5)
            continue
        lo, hi = 0.0, 1e3
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if abs((w[i] * move(mid)).sum()) < abs(need) else (lo, mid)
        np.testing.assert_allclose(d[i], move(hi), atol=1e-4)


class _Recording(attacks.Attack):
    """Breaks the images whose first pixel lies in ``band`` (sets it to 0:
    the toy model then predicts class 0); records which images it was given."""

    def __init__(self, band, seen):
        self.band, self.seen = band, seen

    def perturb(self, model_fn, images, labels, target=None, seed=None):
        self.seen.append([round(float(v), 4) for v in images.numpy()[:, 0, 0, 0]])
        first = images[:, :1, :1, :1]
        hit = tf.logical_and(first >= self.band[0], first < self.band[1])
        return tf.where(hit, tf.zeros_like(images), images)


def test_autoattack_runs_each_attack_only_on_images_still_correct(monkeypatch):
    # Toy model: class 1 where the first pixel is >= 0.05, else class 0.
    fn = lambda z: tf.stack([0.05 - z[:, 0, 0, 0], z[:, 0, 0, 0] - 0.05], -1)  # noqa: E731
    firsts = np.array([0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], "float32")
    x = np.tile(firsts[:, None, None, None], (1, 2, 2, 1))
    y = np.ones(10, "int32")  # image 0 is misclassified clean
    seen = []
    bands = [(0.05, 0.25), (0.25, 0.45), (0.0, 0.35), (0.45, 0.65)]
    monkeypatch.setattr(AutoAttack, "attacks", lambda self: [
        (name, _Recording(band, seen)) for name, band in zip(STAGES, bands)])
    adv, after = AutoAttack(0.1).stages(fn, tf.constant(x), tf.constant(y))
    assert seen == [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                    [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                    [0.5, 0.6, 0.7, 0.8, 0.9],   # FAB-T: nothing left in its band
                    [0.5, 0.6, 0.7, 0.8, 0.9]]
    robust = {k: np.flatnonzero(v.numpy()).tolist() for k, v in after.items()}
    assert robust == {"apgd-ce": [3, 4, 5, 6, 7, 8, 9], "apgd-t": [5, 6, 7, 8, 9],
                      "fab-t": [5, 6, 7, 8, 9], "square": [7, 8, 9]}
    # The returned images break exactly the images each stage broke.
    pred = fn(adv).numpy().argmax(1)
    assert np.flatnonzero(pred == 1).tolist() == [7, 8, 9]


def test_seeded_autoattack_repeats_bit_for_bit(trained_small):
    model, x, y = trained_small
    fn = lambda z: model(z, training=False)  # noqa: E731
    aa = AutoAttack(0.05, n_target_classes=2)
    # Short attacks keep the test fast; the composition is what is checked.
    short = [("apgd-ce", attacks.APGD(0.05, 5)),
             ("apgd-t", attacks.APGD(0.05, 5, loss="dlr_targeted", n_target_classes=2)),
             ("fab-t", FAB(0.05, 5, n_target_classes=2)),
             ("square", attacks.Square(0.05, 20))]
    aa.attacks = lambda: short
    runs = [aa.stages(fn, tf.constant(x), tf.constant(y), seed=tf.constant([7, 1], tf.int64))
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0].numpy(), runs[1][0].numpy())
    for k in STAGES:
        np.testing.assert_array_equal(runs[0][1][k].numpy(), runs[1][1][k].numpy())


def test_one_registry_answers_every_name():
    eps = 8 / 255
    assert isinstance(attacks.make("autoattack", eps), AutoAttack)
    assert [n for n, _ in attacks.make("autoattack", eps).attacks()] == list(STAGES)
    fab = attacks.make("fab-t-l2", 0.5)
    assert isinstance(fab, FAB) and fab.norm == "l2" and fab.n_target_classes == 9
    assert attacks.make("square-5000", eps).queries == 5000
    pgd = attacks.make("pgd-20", eps)
    assert pgd.step_size == pytest.approx(attacks.pgd_step(eps, 20)) == pytest.approx(1 / 255)
    assert attacks.make("autoattack", eps, num_classes=3).n_target_classes == 2
    # The same name through a training config's spec.
    assert attacks.from_spec({"name": "pgd-20", "epsilon": eps}) == pgd
    with pytest.raises(ValueError, match="takes only 'epsilon'"):
        attacks.from_spec({"name": "pgd-20", "epsilon": eps, "steps": 3})


def test_an_epsilon_in_pixel_levels_gets_the_attacks_own_message():
    with pytest.raises(ValueError, match="did you mean 8/255"):
        attacks.make("pgd-20", 8)
    with pytest.raises(ValueError, match="Did you mean 'apgd-t"):
        attacks.make("apgd-tt", 0.1)
    with pytest.raises(ValueError, match="expected pgd-K"):
        attacks.make("pgd-x", 0.1)
    with pytest.raises(ValueError, match="expected square"):
        attacks.make("square-10-20", 0.1)


def _short(eps):
    """AutoAttack's four attacks, shortened: the composition is what a test checks."""
    return [("apgd-ce", attacks.APGD(eps, 5)),
            ("apgd-t", attacks.APGD(eps, 5, loss="dlr_targeted", n_target_classes=2)),
            ("fab-t", FAB(eps, 5, n_target_classes=2)),
            ("square", attacks.Square(eps, 20))]


def test_evaluate_reports_autoattack_and_each_stage_and_resumes(trained_small, tmp_path,
                                                                monkeypatch):
    from tf_advscale.evaluate import evaluate
    model, x, y = trained_small
    monkeypatch.setattr(AutoAttack, "attacks", lambda self: _short(self.epsilon))
    kwargs = dict(x=x, y=y, epsilon=0.05, attacks=["autoattack", "pgd-5"], checks=False,
                  batch_size=32, verbose=False)
    report = evaluate(model, workdir=str(tmp_path), **kwargs)
    aa = report["attacks"]["autoattack"]
    after = [aa["after_each"][k] for k in STAGES]
    assert after == sorted(after, reverse=True) and after[0] <= report["clean_accuracy"]
    assert aa["accuracy"] == after[-1] < report["clean_accuracy"]
    assert report["robustbench"]["autoattack_acc"] == f"{100 * after[-1]:.2f}"
    assert report["worst_case_accuracy"] <= min(aa["accuracy"],
                                                report["attacks"]["pgd-5"]["accuracy"])
    again = evaluate(model, workdir=str(tmp_path), **kwargs)  # from the saved batches
    assert again["attacks"]["autoattack"]["after_each"] == aa["after_each"]


# -- Square, L2 -------------------------------------------------------------------------

def _pattern_by_loops(s):
    """The L2 Square update's pattern, written from the paper's description:
    on each half (top: s // 2 rows, bottom: the rest) nested rectangles around
    the half's centre cell, the k-th adding 1 / (k + 1)^2 within k cells of
    it, the half normalised; the bottom half negated; the whole normalised."""
    def half(rows, cols):
        out = np.zeros((rows, cols))
        cr, cc = rows // 2, cols // 2
        for k in range(max(cr, cc) + 1):
            out[max(cr - k, 0):cr + k + 1, max(cc - k, 0):cc + k + 1] += 1.0 / (k + 1) ** 2
        return out / np.linalg.norm(out)
    top = s // 2
    out = np.concatenate([half(top, s), -half(s - top, s)])
    return out / np.linalg.norm(out)


@pytest.mark.parametrize("s", [3, 4, 5, 9, 13, 29])
def test_square_l2_pattern_is_the_papers(s):
    p = pseudo_gaussian(s)
    np.testing.assert_allclose(p, _pattern_by_loops(s), atol=1e-12)
    assert p.shape == (s, s) and np.linalg.norm(p) == pytest.approx(1.0)
    assert (p[: s // 2] > 0).all() and (p[s // 2:] < 0).all()


def test_square_l2_stays_in_the_ball_and_the_box_and_repeats(trained_small):
    model, x, y = trained_small
    fn = lambda z: model(z, training=False)  # noqa: E731
    eps = 1.5
    square = Square(eps, 60, norm="l2")
    seed = tf.constant([3, 4], tf.int64)
    adv = square(fn, x, y, seed=seed).numpy()
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    dist = np.linalg.norm((adv - x).reshape(len(x), -1), axis=1)
    assert dist.max() <= eps * (1 + 1e-5)
    assert np.abs(adv - x).max() > 0.1  # not an L-inf-sized change: mass moves into windows
    clean = fn(x).numpy().argmax(1) == y
    robust = fn(adv).numpy().argmax(1) == y
    assert robust.sum() < clean.sum() and not (robust & ~clean).any()
    np.testing.assert_array_equal(square(fn, x, y, seed=seed).numpy(), adv)
    assert not np.array_equal(square(fn, x, y, seed=tf.constant([3, 5], tf.int64)).numpy(), adv)


def test_square_l2_beats_its_own_start_and_random_noise_on_the_same_sphere(trained_small):
    """The random search must lower the margin it starts from; and at equal L2
    size it must break more images than random directions do."""
    model, x, y = trained_small
    fn = lambda z: model(z, training=False)  # noqa: E731
    eps = 1.0
    start = Square(eps, 1, norm="l2")(fn, x, y, seed=tf.constant([1, 2], tf.int64))
    found = Square(eps, 120, norm="l2")(fn, x, y, seed=tf.constant([1, 2], tf.int64))
    from tf_advscale.attacks.square import _margin
    m0, m1 = _margin(fn(start), y).numpy(), _margin(fn(found), y).numpy()
    assert (m1 <= m0 + 1e-6).all() and (m1 < m0 - 1e-6).sum() >= len(x) // 2
    noise = np.random.default_rng(0).normal(size=x.shape).astype("float32")
    noise *= eps / np.linalg.norm(noise.reshape(len(x), -1), axis=1)[:, None, None, None]
    noisy = np.clip(x + noise, 0, 1)
    assert ((fn(found).numpy().argmax(1) == y).sum() < (fn(noisy).numpy().argmax(1) == y).sum())


def test_square_l2_is_named_and_composed_and_linf_configs_are_unchanged():
    sq = attacks.make("square-500-l2", 0.5)
    assert isinstance(sq, Square) and sq.norm == "l2" and sq.queries == 500
    assert sq.get_config()["norm"] == "l2"
    aa = attacks.make("autoattack-l2", 0.5)
    assert aa.norm == "l2" and [a.norm for _, a in aa.attacks()] == ["l2"] * 4
    # The L-inf attack's config, which saved evaluations fingerprint through
    # its repr, carries no norm key: older evaluations resume.
    assert "norm" not in attacks.make("square-100", 8 / 255).get_config()
    assert repr(attacks.make("square-100", 8 / 255)) == (
        "Square(epsilon=0.03137254901960784, queries=100, p_init=0.8, seed=None, "
        "clip_min=0.0, clip_max=1.0)")
    with pytest.raises(ValueError, match="norm must be one of"):
        Square(0.5, norm="l1")


def test_autoattack_l2_keeps_every_stage_in_the_l2_ball(trained_small):
    model, x, y = trained_small
    fn = lambda z: model(z, training=False)  # noqa: E731
    eps = 1.0
    aa = AutoAttack(eps, norm="l2", n_target_classes=2)
    aa.attacks = lambda: [
        ("apgd-ce", attacks.APGD(eps, 5, norm="l2")),
        ("apgd-t", attacks.APGD(eps, 5, norm="l2", loss="dlr_targeted", n_target_classes=2)),
        ("fab-t", FAB(eps, 5, norm="l2", n_target_classes=2)),
        ("square", Square(eps, 30, norm="l2"))]
    adv, after = aa.stages(fn, tf.constant(x), tf.constant(y), seed=tf.constant([5, 6], tf.int64))
    dist = np.linalg.norm((adv.numpy() - x).reshape(len(x), -1), axis=1)
    assert dist.max() <= eps * (1 + 1e-5) and adv.numpy().min() >= 0 and adv.numpy().max() <= 1
    counts = [int(after[k].numpy().sum()) for k in STAGES]
    assert counts == sorted(counts, reverse=True)
    assert counts[-1] == int((fn(adv).numpy().argmax(1) == y).sum())


def _counting(fn):
    """``fn`` and a list whose length is the number of model calls (eager)."""
    calls = []

    def counted(z):
        calls.append(1)
        return fn(z)
    return counted, calls


@pytest.mark.parametrize("make", [
    lambda eps: attacks.APGD(eps, 50, loss="ce", seed=1),
    lambda eps: attacks.APGD(eps, 50, norm="l2", loss="ce", seed=1),
    lambda eps: attacks.APGD(eps, 50, loss="dlr_targeted", n_target_classes=3, seed=1),
    lambda eps: Square(eps, 200, seed=1),
    lambda eps: Square(eps, 200, seed=1, norm="l2"),
], ids=["apgd-ce", "apgd-ce-l2", "apgd-t", "square", "square-l2"])
def test_a_run_stops_once_every_image_is_broken_and_returns_the_same_images(make):
    """APGD and Square stop once no image of the batch is left: the images
    they return are the full run's, bit for bit (eager and graph), after far
    fewer model calls; with an image that survives they run every step."""
    x, y, _, _, fn = _linear(n=12)
    eps_all, eps_some = (3.0, 0.03) if make(1.0).norm == "l2" else (0.25, 0.03)
    for eps, stops in ((eps_all, True), (eps_some, False)):
        runs = {}
        for early in (True, False):
            attack = make(eps)
            attack._stop_when_all_broken = early
            counted, calls = _counting(fn)
            adv = attack(counted, tf.constant(x), tf.constant(y), seed=[5, 0]).numpy()
            graph = tf.function(lambda a, b: attack(fn, a, b, seed=[5, 0]))(x, y).numpy()
            runs[early] = adv, len(calls), graph
        broken = fn(runs[False][0]).numpy().argmax(1) != y
        assert broken.all() == stops, (eps, broken.sum())
        np.testing.assert_array_equal(runs[True][0], runs[False][0])
        np.testing.assert_array_equal(runs[True][2], runs[False][2])  # graph mode too
        if stops:
            assert runs[True][1] < runs[False][1] / 3, (runs[True][1], runs[False][1])
        else:
            assert runs[True][1] == runs[False][1]


def _runs_one_by_one(attack, fn, x, y, seed):
    """The reference for ``perturb``'s runs, written out: run j (target
    rank 1 + j // restarts, restart j % restarts) attacks the images no
    earlier run broke, with the seed the attack's docs give it."""
    from tf_advscale.attacks.base import fold_seed, on_subset
    logits = fn(x)
    order = tf.argsort(logits, axis=-1, direction="DESCENDING", stable=True)
    robust = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y)
    targeted = isinstance(attack, FAB) or attack.loss == "dlr_targeted"
    ranks = range(1, attack.n_target_classes + 1) if targeted else [None]
    restarts = attack.restarts if isinstance(attack, FAB) or not targeted else 1
    adv, j = x, 0
    for rank in ranks:
        for restart in range(restarts):
            if isinstance(attack, FAB):
                s = None if restart == 0 else fold_seed(seed, j)

                def run(xs, ys, ts, s=s):
                    found, dist = attack.run(fn, xs, ys, ts, s)
                    return found, dist > attack.epsilon
            else:
                def run(xs, ys, *ts, s=fold_seed(seed, j)):
                    return attack.run(fn, xs, ys, ts[0] if ts else None, s)
            extra = () if rank is None else (order[:, rank],)
            adv, ok = on_subset(robust, run, adv, y, *extra)
            robust = tf.logical_and(robust, ok)
            j += 1
    return adv


def test_the_runs_are_one_graph_loop_traced_once_with_the_written_out_result(monkeypatch):
    """APGD-T's and FAB-T's targets (and restarts) are one graph loop, so a
    run is traced once, not once per target; the loop returns what the runs
    written out one by one return. An op-level seed (an int seed, no call
    seed) still unrolls: one trace per run."""
    x, y, _, _, fn = _linear(n=16, k=6)
    seed = tf.constant([3, 1], tf.int64)
    # (attack, traces of its run): FAB's restarts of one target stay unrolled.
    cases = [(attacks.APGD(0.05, 8, loss="dlr_targeted", n_target_classes=4), 1),
             (attacks.APGD(0.05, 8, loss="ce", restarts=3), 1),
             (FAB(0.05, 8, n_target_classes=4), 1),
             (FAB(0.05, 8, n_target_classes=3, restarts=2), 2)]
    for attack, traces in cases:
        traced = []
        run = type(attack).run
        monkeypatch.setattr(type(attack), "run",
                            lambda self, *a, **k: traced.append(1) or run(self, *a, **k))
        looped = tf.function(lambda a, b: attack(fn, a, b, seed=seed))(x, y).numpy()
        assert len(traced) == traces, (attack, len(traced))
        written = tf.function(lambda a, b: _runs_one_by_one(attack, fn, a, b, seed))(x, y)
        moved = np.abs(looped - x).reshape(len(x), -1).max(1) > 0
        assert 0 < moved.sum() < len(x), (attack, moved.sum())  # some runs succeed, not all
        np.testing.assert_array_equal(looped, written.numpy())
        monkeypatch.undo()
    traced = []
    run = attacks.APGD.run
    monkeypatch.setattr(attacks.APGD, "run",
                        lambda self, *a, **k: traced.append(1) or run(self, *a, **k))
    op_seeded = attacks.APGD(0.05, 8, loss="dlr_targeted", n_target_classes=4, seed=1)
    tf.function(lambda a, b: op_seeded(fn, a, b))(x, y)
    assert len(traced) == 4
