"""The Surrogate Modeling Toolbox (PyPI ``smt``) as peers: kriging, KPLS and gradient-enhanced kriging.

Three peers, each trained by SMT's own code on the cell's physical training split, one SMT model per output:

    krg     KRG: ordinary kriging on values (constant trend, squared-exponential correlation, one length scale
            per input), its hyperparameters fitted by SMT's maximum likelihood with ``n_start`` multistarts.
    kpls    KPLS: the same kriging with its length scales in ``n_comp`` partial-least-squares directions, so the
            likelihood has n_comp parameters instead of n_in: the kriging that stays cheap in higher dimension.
    gekpls  GEKPLS: gradient-enhanced KPLS on values and partials. It folds each training point's partials into
            the correlation through a first-order Taylor expansion and, with ``extra_points`` > 0, adds that
            many Taylor-extrapolated points per training point (Bouhlel & Martins 2019).

Variants map like JENN's: a value-only cell (beta = 1) is ``krg`` / ``kpls``, a derivative-enhanced cell
(beta < 1) is ``gekpls``. GEKPLS weighs nothing by beta: every beta < 1 trains the same model.

Values and Jacobians come from SMT's API (``predict_values``, ``predict_derivatives``), in float64; the cell checks
that Jacobian against central differences of the values (``jac_fd_check``) and takes Hessians as central
differences of it, as for every peer without a Hessian API. Inputs and outputs go in in physical units: SMT
standardizes both itself before it fits.

Settings (SMT's defaults unless said; measured on forum4x4 and gen:*:0 at n_train 256, jacbench's headline:
results/measurements/README.md, "Kriging settings"):
  * ``n_start`` = 1 multistart (SMT's default is 10) with ``hyper_opt`` Cobyla for all three (KRG's and KPLS's
    default is TNC): ``MULTISTART_NOTE``;
  * KPLS / GEKPLS ``n_comp`` = 2, GEKPLS ``extra_points`` = 1 (SMT's default 0);
  * ``max_seconds``: a wall-time budget for the whole fit; a fit that runs past it stops and its cell is recorded
    ``over_budget`` (kriging's cost grows like n_train^3: the data-size axis needs an honest ceiling, not a hang).
One departure from SMT's code: GEKPLS gives a PLS direction that is 0/0 at a training point (an output that
depends on fewer inputs than ``n_comp``) zero coefficients instead of failing (``_degenerate_pls_as_zeros``).
A wrong input (too few points, a singular correlation matrix, more PLS components than inputs) fails the cell with
SMT's own message, prefixed with the peer and the output it was fitting.
"""

from __future__ import annotations

import contextlib
import functools
import io
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# How the defaults were chosen (tests/test_smt_peers.py keeps the code path; the table of errors and fit times, one
# run each: results/measurements/README.md, "Kriging settings"): more starts find a higher likelihood, not better
# derivatives, and Cobyla is several times cheaper than TNC at equal error: one Cobyla start. Fit time grows like n^3.
MULTISTART_NOTE = "n_start 1 with Cobyla: as accurate as 3 or 10 TNC starts at n_train 256, several times cheaper"


class OverBudget(RuntimeError):
    """A fit ran past its wall-time budget (``max_seconds``): the cell is recorded ``over_budget``, not failed."""

    cell_status = "over_budget"  # bench.run.results.OVER_BUDGET: the runner records the cell with this status


class PeerFitError(RuntimeError):
    """SMT refused or failed a fit: the message is SMT's own, prefixed with the peer and the output."""


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str):
    """Raise OverBudget inside the block once ``seconds`` of wall time have passed (SIGALRM; main thread only).

    Off the main thread (a thread-pool executor) no alarm can be set: the block runs without a limit, and says so
    with a RuntimeWarning. An alarm set by someone else is restored afterwards.
    """
    if not seconds or seconds <= 0:
        yield
        return
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        warnings.warn(f"{what}: max_seconds = {seconds:g} cannot be enforced off the main thread", RuntimeWarning,
                      stacklevel=3)  # fmt: skip
        yield
        return

    def _raise(signum, frame):
        raise OverBudget(f"{what} ran past its budget of max_seconds = {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Fitted:
    """One SMT model per output, and what fitting them took."""

    models: list[Any]
    n_in: int
    seconds: float  # wall time of all the fits
    params: int  # numbers the predictor keeps: the training points (inputs and weights) and the hyperparameters
    flops: int  # multiply-adds of one value prediction, all outputs (the correlation with every training point)
    steps: int = 0  # likelihood optimizations run (n_start per output)
    history: list[dict] = field(default_factory=list)  # no per-iteration loss: SMT's optimizer keeps none

    def predict_values(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float64)
        return np.concatenate([m.predict_values(x) for m in self.models], axis=1)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (B, n_in) float64 -> y (B, n_out), J (B, n_out, n_in), from SMT's predict_values / predict_derivatives."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        J = np.empty((len(x), len(self.models), self.n_in))
        for i, m in enumerate(self.models):
            for k in range(self.n_in):
                J[:, i, k] = m.predict_derivatives(x, k)[:, 0]
        return self.predict_values(x), J


OPTIONS = {  # option -> default; each can be set in [model_overrides.<peer>]
    "n_start": 1,  # multistarts of the likelihood optimization (SMT's default 10; MULTISTART_NOTE)
    "hyper_opt": "Cobyla",  # SMT's optimizer: "Cobyla" (GEKPLS's default) or "TNC" (KRG's and KPLS's default)
    "corr": "squar_exp",  # correlation kernel (SMT's default)
    "poly": "constant",  # regression trend (SMT's default)
    "nugget": None,  # diagonal jitter; None = SMT's 2.2e-14
    "n_comp": 2,  # KPLS / GEKPLS: PLS directions
    "extra_points": 1,  # GEKPLS: Taylor-extrapolated points per training point
    "max_seconds": None,  # wall-time budget of the whole fit (all outputs); None = none
}


MIN_POINTS = 3  # SMT's KPLS refuses fewer ("The database should be at least 3 points"); KRG fails unclearly


def _check_design(name: str, x: np.ndarray) -> None:
    """PeerFitError for a design kriging cannot interpolate: fewer than MIN_POINTS points, or a point given twice
    (two equal rows make the correlation matrix singular; SMT's nugget hides it and returns garbage derivatives)."""
    if len(x) < MIN_POINTS:
        raise PeerFitError(f"{name}: kriging needs at least {MIN_POINTS} training points, got {len(x)} "
                           "(raise grid.n_train)")  # fmt: skip
    _, first, counts = np.unique(x, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        row = int(first[np.argmax(counts > 1)])
        raise PeerFitError(
            f"{name}: {int((counts > 1).sum())} training point(s) appear more than once (first: row {row}, x = "
            f"{x[row].tolist()}): kriging's correlation matrix is singular there; drop the duplicate rows"
        )


@functools.cache
def smt_classes() -> dict[str, type]:
    """SMT's KRG, KPLS and GEKPLS, each with one loop vectorized: the spatial derivative of the correlation
    distance (``_componentwise_distance(..., return_derivative=True)``), which ``predict_derivatives`` calls and
    which SMT 2.15 computes in a pure-Python loop over (samples x training points x inputs) unless numba is set up,
    so the Jacobians and the difference Hessians of one cell took minutes (results/measurements/README.md, "SMT's
    derivative loop"). The vectorized lines compute SMT's own formula
    (tests/test_smt_peers.py checks them against SMT's functions to 1e-12); everything else is SMT's."""
    from smt.surrogate_models import GEKPLS, KPLS, KRG

    def radial(self, dx, theta=None, return_derivative=False):  # KRG: power * theta_j * sign(d) |d|^(power - 1)
        if not return_derivative or theta is None or self.options["corr"] == "act_exp":
            return type(self).__mro__[1]._componentwise_distance(self, dx, theta, return_derivative)
        power = self._pow_exp_power
        der = np.abs(dx) ** (power - 1)
        der[dx < 0] *= -1.0
        return power * np.asarray(theta).reshape(1, -1) * der

    def pls(self, dx, theta=None, return_derivative=False):  # KPLS squar_exp: d_j * 2 sum_l theta_l coeff_jl^2
        if not return_derivative or theta is None or self.options["corr"] != "squar_exp":
            return type(self).__mro__[1]._componentwise_distance(self, dx, theta, return_derivative)
        n_comp = self.options["n_comp"]
        coef = 2.0 * (np.asarray(self.coeff_pls)[:, :n_comp] ** 2) @ np.asarray(theta)[:n_comp]
        return dx * coef.reshape(1, -1)

    def gradient_pls(self, X, y):  # GEKPLS: SMT's per-point PLS, with degenerate directions as zeros
        with _degenerate_pls_as_zeros():
            return GEKPLS._compute_pls(self, X, y)

    return {
        "KRG": type("KRG", (KRG,), {"_componentwise_distance": radial}),
        "KPLS": type("KPLS", (KPLS,), {"_componentwise_distance": pls}),
        "GEKPLS": type("GEKPLS", (GEKPLS,), {"_componentwise_distance": pls, "_compute_pls": gradient_pls}),
    }


@contextlib.contextmanager
def _degenerate_pls_as_zeros():
    """Our one departure from SMT's GEKPLS (2.15): where a training point's local PLS has fewer informative
    directions than ``n_comp``, the missing directions get zero coefficients instead of failing the fit.

    GEKPLS fits a PLS regression at every training point to the Taylor-extrapolated values around it. Where an
    output depends on fewer inputs than ``n_comp`` (gen:smooth:1's f4 depends on x1 alone), the value residual
    after the first component is exactly zero and scikit-learn's next weights are 0/0: the fit raises "A has a
    NaN entry". SMT's own code means to give such a point zero coefficients (its ``except StopIteration``, the
    behaviour of scikit-learn before 0.24); we keep the components that are defined and zero the rest, which
    is what a direction with no signal contributes to the averaged coefficients either way. SMT's function is
    called unchanged; only the PLS class it instantiates is swapped while it runs."""
    from sklearn.cross_decomposition import PLSRegression
    from smt.surrogate_models.krg_based import distances

    class ZeroDegenerate(PLSRegression):
        def fit(self, X, y):
            if not (np.isfinite(X).all() and np.isfinite(y).all()):
                return PLSRegression.fit(self, X, y)  # bad data: scikit-learn's own error, never a zero direction
            n_comp = self.n_components
            try:
                for k in range(n_comp, 0, -1):
                    try:
                        with np.errstate(invalid="ignore", divide="ignore"):
                            PLSRegression.fit(self.set_params(n_components=k), X, y)
                    except ValueError as err:  # scipy's, on the 0/0 weights of component k; others are SMT's
                        if str(err) != "A has a NaN entry":
                            raise
                        continue
                    if np.isfinite(self.x_rotations_).all():
                        break
                else:
                    raise StopIteration  # no direction at all (a constant output): SMT zeroes the point
            finally:
                self.n_components = n_comp  # SMT reuses one instance for every training point
            self.x_rotations_ = np.pad(self.x_rotations_, ((0, 0), (0, n_comp - self.x_rotations_.shape[1])))
            return self

    with _PLS_LOCK:
        saved, distances.pls = distances.pls, ZeroDegenerate
        try:
            yield
        finally:
            distances.pls = saved


_PLS_LOCK = threading.Lock()


class SmtKriging:
    """An SMT kriging model as a peer: options / match_params / param_count / flops_per_sample / fit."""

    family = "kriging"
    # jac_fd_check's tolerance (relative; the zoo's and JENN's is 1e-5): kriging's values carry noise from
    # near-singular correlation solves (length scales at SMT's bound), which holds the best step's agreement above the
    # zoo's tolerance even where the API Jacobian is exact (measured: results/measurements/README.md, "Kriging
    # against its own differences"). The check is for wrong API derivatives (a factor, a lost chain-rule term: errors
    # of order 1), which 1e-3 still catches.
    fd_check_tol = 1e-3
    # ... and beyond it the cell is kept, its check flagged (bench.fidelity.cell.FD_DISAGREES), not failed: the API
    # Jacobian is SMT's own formula (tests/test_smt_peers.py checks our one vectorized line against SMT's), scored
    # against the exact derivatives like every method's; what disagrees are its values, computed through an
    # ill-conditioned solve (a nugget brings the check's agreement closer without a better Jacobian: measured in
    # results/measurements/README.md, "Kriging against its own differences"). A user of SMT's gradients gets
    # exactly these.
    fd_check_fails_cell = False
    cost_exponent = 3  # fit time ~ n_train^3 (a Cholesky per likelihood evaluation): bench.run.budget extrapolates

    def __init__(self, name: str, smt_class: str, variants: tuple[str, ...], keys: tuple[str, ...], description: str):
        self.name, self.smt_class, self.variants, self.keys = name, smt_class, variants, keys
        self.description = description

    def options(self, **overrides: Any) -> dict:
        """The defaults this peer uses, with ``overrides``; ValueError names an option it does not take."""
        bad = [k for k in overrides if k not in self.keys]
        if bad:
            raise ValueError(f"peer {self.name!r} does not accept {bad}; it accepts: {', '.join(self.keys)}")
        out = {k: OPTIONS[k] for k in self.keys}
        out.update({k: v for k, v in overrides.items() if v is not None})
        if int(out["n_start"]) < 1:
            raise ValueError(f"{self.name}: n_start must be >= 1, got {out['n_start']}")
        return out

    def match_params(self, budget: int, n_in: int, n_out: int, **overrides: Any) -> dict:
        """Kriging has no width to size: its size is the training set's. The overrides come back unchanged."""
        self.options(**overrides)
        return dict(overrides)

    def param_count(self, n_in: int, n_out: int, **overrides: Any) -> int:
        """The hyperparameters alone (the training points it also keeps depend on n_train: ``Fitted.params``)."""
        o = self.options(**overrides)
        return n_out * ((o.get("n_comp") or n_in) + 2)  # length scales, the trend constant and the process variance

    def flops_per_sample(self, n_in: int, n_out: int, **overrides: Any) -> int:
        return 0  # depends on n_train: Fitted.flops

    def _model(self, o: dict, lower: np.ndarray, upper: np.ndarray, seed: int) -> Any:
        kw: dict[str, Any] = {"print_global": False, "n_start": int(o["n_start"]), "corr": o["corr"],
                              "poly": o["poly"], "seed": int(seed)}  # fmt: skip
        for key in ("hyper_opt", "nugget"):
            if o.get(key) is not None:
                kw[key] = o[key]
        if "n_comp" in o:
            kw["n_comp"] = int(o["n_comp"])
        if "extra_points" in o:
            kw.update(extra_points=int(o["extra_points"]), xlimits=np.stack([lower, upper], axis=1))
        return smt_classes()[self.smt_class](**kw)

    def fit(
        self, x: np.ndarray, y: np.ndarray, J: np.ndarray | None, beta: float, seed: int, **overrides: Any
    ) -> Fitted:
        """Fit one model per output on x (B, n_in), y (B, n_out) and, for gekpls, J (B, n_out, n_in); physical."""
        try:
            import smt  # noqa: F401
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError(f"the {self.name!r} peer needs SMT: pip install smt") from err
        o = self.options(**overrides)
        gradient = "sobolev" in self.variants
        if gradient and J is None:
            raise ValueError(f"{self.name} is gradient-enhanced: it needs training Jacobians and the data have none")
        x, y = np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(y, dtype=np.float64)
        lower, upper = x.min(axis=0), x.max(axis=0)
        n, n_in, n_out = len(x), x.shape[1], y.shape[1]
        _check_design(self.name, x)
        models = []
        t0 = time.perf_counter()
        with time_limit(o["max_seconds"], f"{self.name} on {n} points"):
            for i in range(n_out):
                m = self._model(o, lower, upper, seed)
                printed = io.StringIO()  # SMT prints its optimizer's caught exceptions: kept out of the run's log
                try:
                    with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
                        warnings.simplefilter("ignore")  # SMT warns per multistart; failures raise below
                        m.set_training_values(x, y[:, i : i + 1])
                        if gradient:
                            for k in range(n_in):
                                m.set_training_derivatives(x, np.ascontiguousarray(J[:, i, k : k + 1]), k)
                        m.train()
                except OverBudget:
                    raise
                except Exception as err:  # SMT's reason, named: too few points, a singular matrix, a bad n_comp
                    said = printed.getvalue().strip().splitlines()[-3:]
                    raise PeerFitError(f"{self.name} (SMT {self.smt_class}) on output {i} of {n} points: "
                                       f"{type(err).__name__}: {err}" + (f" (SMT printed: {' | '.join(said)[:240]})"
                                                                          if said else "")) from err  # fmt: skip
                models.append(m)
        seconds = time.perf_counter() - t0
        hypers = self.param_count(n_in, n_out, **overrides)
        params = n_out * n * (n_in + 1) + hypers
        flops = n_out * n * (3 * n_in + 2)  # per training point: a scaled distance, an exp, a multiply-add
        return Fitted(models, n_in, seconds, params, flops, steps=n_out * int(o["n_start"]))


COMMON = ("n_start", "hyper_opt", "corr", "poly", "nugget", "max_seconds")
KRG = SmtKriging("krg", "KRG", ("value",), COMMON, "SMT KRG: kriging on values, one model per output")
KPLS = SmtKriging("kpls", "KPLS", ("value",), (*COMMON, "n_comp"),
                  "SMT KPLS: kriging with PLS-reduced length scales, on values, one model per output")  # fmt: skip
GEKPLS = SmtKriging("gekpls", "GEKPLS", ("sobolev",), (*COMMON, "n_comp", "extra_points"),
                    "SMT GEKPLS: gradient-enhanced KPLS on values and partials, one model per output")  # fmt: skip
PEERS = {p.name: p for p in (KRG, KPLS, GEKPLS)}
