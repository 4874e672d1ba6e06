"""A Pyro model/guide pair, with every parameter it uses, as one ``nn.Module``.

The engine serves programs, not classes. A *program pair* is any two callables

.. code-block:: text

    model(x[, y])   samples the latent sites and conditions its observed site(s) on x
    guide(x[, y])   samples every latent site the model samples

written however a Pyro user writes them: bound methods of one ``nn.Module`` that call
``pyro.module(...)`` (Pyro's VAE tutorial), two ``PyroModule`` objects (Pyro's
``contrib/cevae``), or plain functions with ``pyro.param``. :class:`Programs` finds their
parameters by tracing the pair once and holds them in one module, so one torch optimizer,
``state_dict`` checkpoints and ``DistributedDataParallel`` see them all:

- the ``nn.Module`` objects the programs belong to (a bound method's ``self``, or a
  program that is itself a module) are registered as submodules;
- parameters that live only in Pyro's param store (``pyro.param``, or ``pyro.module`` of a
  network no owner holds) are registered in a ``ParameterDict``.

Each pair keeps *its own* param-store state and runs inside it (:meth:`Programs.scope`,
Pyro's ``ParamStoreDict.scope``), so two pairs trained in one process never share, or
silently reuse, each other's tensors, whatever the global ``module_local_params`` setting.

Tracing also tells the engine what it needs about the pair: its latent sites (the guide's
sample sites), its observed sites, whether it takes labels (a second positional argument)
and how many plates it nests (so an outer particle plate can vectorise it). It also says
where the KL term has a closed form the objective and the measurements may use
(``analytic_kl_sites``, :func:`closed_form_kl`): a latent site whose guide and model
distributions ``kl_divergence`` knows, scaled and masked alike in both programs, in a pair
whose guide samples the latent sites in the model's order (``mean_field``: Pyro's sufficient
condition for ``TraceMeanField_ELBO``, so every parent of a site in the model is drawn from
the guide before it). Elsewhere the KL is estimated from the draw, ``log q - log p``.

Example::

    >>> import torch, pyro, pyro.distributions as dist
    >>> def model(x):
    ...     loc = pyro.param("loc", torch.zeros(3))
    ...     with pyro.plate("data", x.shape[0]):
    ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
    ...         pyro.sample("x", dist.Normal(loc + z[:, None], 1.0).to_event(1), obs=x)
    >>> def guide(x):
    ...     w = pyro.param("w", torch.zeros(3))
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("z", dist.Normal(x @ w, 1.0))
    >>> pair = Programs(model, guide, torch.zeros(4, 3))
    >>> pair.latent_sites, pair.observed_sites, sorted(n for n, _ in pair.named_parameters())
    (('z',), ('x',), ['store.loc', 'store.w'])
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import unwrap
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from torch import nn
from torch.distributions import kl_divergence

from ppl_vae.data.fields import Fields
from ppl_vae.errors import UserError, first_line
from ppl_vae.inputs import Binder, Inputs, inputs_for

Program = Callable[..., Any]
#: Layers whose reading of the input's dimensions an outer particle dimension changes.
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


def owner_of(fn: Program) -> nn.Module | None:
    """The ``nn.Module`` a program belongs to: itself, a bound method's ``self`` (under any
    Pyro handler: ``config_enumerate(vae.guide)``), or the one module a function closes
    over (a factory's ``def model(xs, ys=None): vae.model(xs, ys); vae.model_classify(xs,
    ys)``); None for a plain function or one closing over several modules."""
    fn = unwrap(fn)
    if isinstance(fn, nn.Module):
        return fn
    self = getattr(fn, "__self__", None)
    if isinstance(self, nn.Module):
        return self
    found: dict[int, nn.Module] = {}
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # a cell not yet filled
            continue
        value = getattr(unwrap(value), "__self__", value) if callable(value) else value
        if isinstance(value, nn.Module):
            found[id(value)] = value
    return next(iter(found.values())) if len(found) == 1 else None


def takes_labels(fn: Program) -> bool:
    """Whether ``fn`` accepts a second positional argument (``model(x, y)``)."""
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional)


def labels_optional(fn: Program) -> bool:
    """Whether ``fn``'s second positional parameter has a default (``model(xs, ys=None)``,
    Pyro's convention: ``None`` means an unlabelled batch)."""
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 and positional[1].default is not inspect.Parameter.empty


def batch_hook(model: Callable, guide: Callable) -> Callable | None:
    """The per-batch input hook the programs declare (``batch_inputs`` on a program or on
    the module it belongs to), or None."""
    for fn in (model, guide):
        for where in (fn, owner_of(fn)):
            hook = getattr(where, "batch_inputs", None)
            if hook is not None:
                if not callable(hook):
                    raise UserError(f"batch_inputs of {type(where).__name__} is not callable")
                return hook
    return None


LABEL_FORMS = ("ids", "onehot", "float")


def label_form(model: Program, guide: Program | None = None) -> str:
    """The form a program wants its labels in, declared as ``label_form`` on the program
    or on the module it belongs to: ``"ids"`` (int64 class ids, ``-1`` for a hidden label,
    mixed in one batch: the suite's convention, the default), ``"onehot"`` (one-hot float
    rows, as Pyro's SSVAE) or ``"float"`` (the label as a float, as CEVAE's treatment
    ``t``). With ``onehot`` or ``float`` a batch is all labelled or all unlabelled, and an
    unlabelled one is passed as ``model(x)`` (its ``y`` left at the default ``None``)."""
    for fn in (model, guide):
        for where in (fn, owner_of(fn)):
            form = getattr(where, "label_form", None)
            if form is not None:
                if form not in LABEL_FORMS:
                    raise UserError(f"label_form {form!r} is not one of {', '.join(LABEL_FORMS)}")
                return form
    return "ids"


_LABEL_HINT = "ids: int64 class ids; onehot: one-hot float rows; float: one float each"


def _store_key(name: str) -> str:
    """A ``ParameterDict`` key for a param-store name (no dots allowed there)."""
    return name.replace(".", "__").replace("$$$", "__")


def closed_form_kl(q_site: dict[str, Any], p_site: dict[str, Any]) -> torch.Tensor | None:
    """``KL(q || p)`` of one latent site from ``kl_divergence``, shaped like the guide
    distribution's batch and carrying the site's scale (beta, a subsample scale) and mask
    as its ``log_prob`` does; None where ``kl_divergence`` does not know the pair or its
    result does not have that shape. Whether the closed form is *valid* for the pair is
    :attr:`Programs.analytic_kl_sites`' business (the mean-field order, equal scales and
    masks), not this function's."""
    q, p = q_site["fn"], p_site["fn"]
    try:
        kl = kl_divergence(q, p)
    except NotImplementedError:
        return None
    if not torch.is_tensor(kl) or kl.shape != q.batch_shape:
        return None
    return scale_and_mask(kl, q_site["scale"], q_site["mask"])


def _same(a: Any, b: Any) -> bool:
    """Whether two site scales (or masks) are the same: the same object, or equal numbers
    or tensors (compared outside any trace of the loss: at the pair's first trace)."""
    if a is b:
        return True
    if torch.is_tensor(a) or torch.is_tensor(b):
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        return a.shape == b.shape and bool(torch.equal(a, b))
    return isinstance(a, int | float) and isinstance(b, int | float) and a == b


def _is_point_mass(fn: dist.Distribution) -> bool:
    while isinstance(fn, dist.Independent | dist.MaskedDistribution):
        fn = fn.base_dist
    return isinstance(fn, dist.Delta)


def latent_names(guide_tr) -> list[str]:
    """The latent sites of a guide trace (its unobserved sample sites), in guide order."""
    return [
        n
        for n, s in guide_tr.nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
    ]


def data_dim(site: dict[str, Any], batch: int) -> int | None:
    """The dimension of a site's ``log_prob`` (counted from the right) that is the data
    plate: the plate named ``data`` whose size there is ``batch``, else the innermost-listed
    plate of that size (a subsampled plate counts by its subsample); None for a site
    outside it (a global site)."""
    shape = site["fn"].batch_shape
    found = None
    for frame in site["cond_indep_stack"]:
        if frame.dim is None or len(shape) < -frame.dim or frame.name.startswith("_ppl_vae"):
            continue
        if shape[frame.dim] == batch and (found is None or frame.name == "data"):
            found = frame.dim
    return found


def is_local(site: dict[str, Any], batch: int) -> bool:
    """Whether a latent site lies in the data plate (one value per example)."""
    return data_dim(site, batch) is not None


def enumerated_sites(guide_tr, latent: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The latent sites a guide trace marks for enumeration."""
    return tuple(n for n in latent if guide_tr.nodes[n]["infer"].get("enumerate"))


def sample_names(tr) -> list[str]:
    """The sample sites of a trace, in trace order."""
    return [n for n, s in tr.nodes.items() if s["type"] == "sample"]


def observed_names(model_tr) -> list[str]:
    """The observed sites of a model trace, in model order."""
    return [n for n, s in model_tr.nodes.items() if s["type"] == "sample" and s["is_observed"]]


def plate_nesting(model_tr, guide_tr) -> int:
    """How many vectorised plates the sample sites of the two traces nest (Pyro's
    ``max_plate_nesting``: the outermost plate dimension, counted from the right)."""
    frames = [
        f.dim
        for tr in (model_tr, guide_tr)
        for s in tr.nodes.values()
        if s["type"] == "sample"
        for f in s["cond_indep_stack"]
        if f.vectorized and f.dim is not None
    ]
    return max([-d for d in frames], default=0)


def scales_sites(model_tr, guide_tr) -> bool:
    """Whether some sample site carries a ``poutine.scale`` of the program's own (scANVI's
    ``scale_factor``)."""
    return any(
        not (isinstance(s["scale"], int | float) and s["scale"] == 1)
        for tr in (model_tr, guide_tr)
        for s in tr.nodes.values()
        if s["type"] == "sample"
    )


def model_enumerated_sites(model_tr, latent: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The sites the model enumerates itself (summed out; the guide does not sample them)."""
    return tuple(
        n
        for n, s in model_tr.nodes.items()
        if s["type"] == "sample"
        and not s["is_observed"]
        and n not in latent
        and s["infer"].get("enumerate")
    )


def analytic_sites(model_tr, guide_tr, latent: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The latent sites whose KL has a closed form valid in these traces: the guide samples
    the latent sites in the model's order (mean field), and each site is not enumerated,
    has the same scale and mask in both programs, and ``kl_divergence`` knows its two
    distributions. Read per trace, so sites that come and go with the batch are judged
    where they occur."""
    order = tuple(n for n, s in model_tr.nodes.items() if s["type"] == "sample" and n in latent)
    if order != tuple(latent):
        return ()
    enumerated = enumerated_sites(guide_tr, latent)
    return tuple(n for n in latent if n not in enumerated and _closed_form(guide_tr, model_tr, n))


def _closed_form(guide_tr, model_tr, name: str) -> bool:
    """Whether the KL of site ``name`` has a closed form in these traces: the same scale
    and mask in both programs, and ``kl_divergence`` knows the two distributions."""
    q, p = guide_tr.nodes[name], model_tr.nodes[name]
    if p["is_observed"]:
        return False
    masks = [None if m is True else m for m in (q["mask"], p["mask"])]  # True: no mask
    if not (_same(q["scale"], p["scale"]) and _same(*masks)):
        return False
    with torch.no_grad():
        return closed_form_kl(q, p) is not None


def program_name(model: Program) -> str:
    """A pair's default name: its model's owner's class, else the model's own name."""
    owner = owner_of(model)
    if owner is not None:
        return type(owner).__name__
    return getattr(model, "__name__", type(model).__name__)


def owners_of(model: Program, guide: Program) -> list[nn.Module]:
    """The distinct modules the two programs belong to (:func:`owner_of`), model's first."""
    owners: list[nn.Module] = []
    for fn in (model, guide):
        owner = owner_of(fn)
        if owner is not None and all(owner is not o for o in owners):
            owners.append(owner)
    return owners


def _example_rows(example, inputs: Inputs | dict[str, Any] | None) -> tuple[tuple, Any]:
    """The example batch as a tuple: a data set gives its first two training rows (all of
    them for named arrays), and ``{PARAM: ARRAY or VALUE}`` inputs are read against it."""
    if hasattr(example, "x_train"):
        if inputs is not None and not isinstance(inputs, Inputs):
            inputs = inputs_for(inputs, example, text=False)
        y, n = example.y_train, (None if example.named else 2)
        example = (example.x_train[:n], None if y is None else y[:n])
    return (example if isinstance(example, tuple) else (example,)), inputs


class Programs(nn.Module):
    """``model`` and ``guide`` with all their parameters; see the module docstring.

    ``example`` is a batch the programs accept (``x``, or ``(x, y)``, or a data set whose
    first rows are taken: all of them for named arrays): the pair is traced on it once,
    which creates lazily-made parameters. ``inputs`` fills parameters by name besides the
    arrays of their names (:class:`~ppl_vae.inputs.Inputs`, or ``{PARAM: ARRAY or VALUE}``
    with a data set). ``batch``, a real batch of the
    configured size (the whole training set for a full-batch program), is traced first
    where given (on a fork of the random streams), so per-example parameters and plate
    sizes come out at their real sizes, and the sites are described from it
    (``first_batch_size``). Attributes set by that trace: ``latent_sites`` (the *local*
    latent sites, one value per example in the data plate: the codes),
    ``global_sites`` (latent sites outside the data plate: LDA's topics, a DEF's weights),
    ``all_latent_sites`` (both, in guide order), ``observed_sites``, ``latent_sizes``
    (values per example of each local site),
    ``takes_labels``, ``max_plate_nesting``, ``has_prior`` (some latent site is scored
    by the model, not masked out), ``point_mass`` (every latent site of the guide is a
    ``Delta``: a deterministic autoencoder, whose importance weights estimate nothing),
    ``mean_field`` (the guide samples the latent sites in the model's order),
    ``reparameterized`` (every latent site of the guide draws by ``rsample``),
    ``scaled`` (some site carries a ``poutine.scale`` of the program's own),
    ``enumerated`` (the latent sites marked for enumeration), ``model_enumerated`` (sites
    the model enumerates and the guide does not sample) and ``analytic_kl_sites``
    (where the KL has a valid closed form; see the module docstring). These describe the
    first trace; the measurements (:mod:`ppl_vae.traces`) read the sites of each trace
    they compute on, since sites may come and go with the batch.
    """

    def __init__(
        self,
        model: Program,
        guide: Program,
        example: torch.Tensor | tuple[torch.Tensor, ...],
        name: str | None = None,
        *,
        batch: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
        inputs: Inputs | dict[str, Any] | None = None,
    ):
        super().__init__()
        # The programs themselves stay out of the module tree (their owners go in below).
        self.__dict__["model"], self.__dict__["guide"] = model, guide
        self.name = name or program_name(model)
        self.owners = nn.ModuleList(owners_of(model, guide))
        self.store = nn.ParameterDict()
        self._state: dict[str, dict] = {"params": {}, "constraints": {}}
        self._depth = 0
        self._vectorizes: dict[str, bool] = {}  # per way of running: under a particle plate?
        example, inputs = _example_rows(example, inputs)
        self._bind(inputs, example)
        self.first_batch_size = None
        if batch is None:
            self._first_trace(example)
        else:
            self._first_traces(example, batch if isinstance(batch, tuple) else (batch,))

    def _bind(self, inputs: Inputs | dict[str, Any] | None, example: tuple) -> None:
        """How the programs take a batch: by name (:attr:`binder`) or as ``(x[, y])``, with
        or without labels (``takes_labels``, ``labels_optional``, ``label_form``)."""
        model, guide = self.model, self.guide
        hook = batch_hook(model, guide)
        #: Inputs by name (:mod:`ppl_vae.inputs`): set for a data set of named arrays, with
        #: ``--arg`` options or a declared input hook; None: ``(x[, y])`` as ever.
        self.binder: Binder | None = None
        if inputs or hook is not None or (len(example) > 1 and isinstance(example[1], Fields)):
            self.binder = Binder(model, guide, inputs, hook)
            # the engine passes the batch's other arrays in the labels' slot (``Fields``)
            self.takes_labels, self.labels_optional, self.label_form = True, False, "ids"
            return
        self.takes_labels = takes_labels(model) and takes_labels(guide)
        self.labels_optional = self.takes_labels and all(
            labels_optional(f) for f in (model, guide) if takes_labels(f)
        )
        self.label_form = label_form(model, guide) if self.takes_labels else "ids"

    def _first_traces(self, example: tuple, batch: tuple) -> None:
        """The first trace on the real ``batch`` (on a fork of the random streams, the
        owners' buffers such as BatchNorm's statistics put back), then the example's."""
        cuda = [batch[0].device.index or 0] if batch[0].is_cuda else []
        buffers = {k: b.clone() for k, b in self.owners.named_buffers()}  # BatchNorm's stats
        with torch.random.fork_rng(devices=cuda):
            self._first_trace(batch)
        with torch.no_grad():
            for k, b in self.owners.named_buffers():
                if k in buffers and buffers[k].shape == b.shape:
                    b.copy_(buffers[k])
        self.first_batch_size = int(batch[0].shape[0])
        # The two-row example as before, on the caller's random streams: what it draws keeps
        # a seed's numbers the same. A full-batch program may refuse two rows: that is fine.
        try:
            self._first_trace(example, describe=False)
        except Exception:  # noqa: BLE001 - the real batch ran; the example only draws
            pass

    def _first_trace(self, example: tuple, describe: bool = True) -> None:
        """Trace the pair once on ``example`` (``(x,)`` or ``(x, y)``): parameters are
        created and collected, and (with ``describe``) the sites described."""
        if self.binder is not None:  # bound by name; described against the data view's rows
            self._trace_once(self.args(*example[:2]), describe, example[0])
            return
        if self.takes_labels and (len(example) < 2 or example[1] is None):
            self.args(example[0], None)  # the clear error where the programs need labels
        if self.labels_optional and len(example) > 1 and example[1] is not None:
            # a labelled batch must run too (its failure names the labels), but the sites
            # are those of an unlabelled one: there the guide samples what labels observe
            self._run_once(self.args(*example[:2]), labelled=True)
            example = example[:1]
        self._trace_once(example[: 2 if self.takes_labels else 1], describe)

    # -- the param-store scope ------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Run with this pair's own param-store state (re-entrant)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with pyro.get_param_store().scope(self._state):
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0

    def args(self, x: torch.Tensor, y: torch.Tensor | Fields | None = None) -> tuple:
        """The positional arguments the programs take for a batch: ``(x, y)``, or ``(x,)``
        when they take no labels or their labels are optional and ``y`` is None. Programs
        bound by name (:attr:`binder`) get their parameters filled from the batch's named
        arrays: ``y`` is then the batch's :class:`~ppl_vae.data.fields.Fields` (or labels,
        or None) and ``x`` the data view's rows, possibly binarised since."""
        if self.binder is not None:
            if isinstance(y, Fields):
                batch = y.with_view(x)
            else:
                batch = {"x": x} if y is None else {"x": x, "y": y}
            return self.binder(batch)
        if self.takes_labels:
            if y is None and self.labels_optional:
                return (x,)
            if y is None:
                raise UserError(
                    f"{self.name} takes labels (model(x, y)) but the data set has none; "
                    "use a labelled data set"
                )
            return (x, y)
        return (x,)

    def eval_args(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple:
        """The arguments the measurements score a batch with: :meth:`args`, except that
        programs whose labels are optional are scored on x alone (their guide draws the
        labels), so what is measured is log p(x) as at test time in Pyro's SSVAE."""
        return self.args(x, None if self.labels_optional else y)

    # -- discovery ------------------------------------------------------------------------
    def _run_once(self, args: tuple, labelled: bool) -> tuple:
        """Trace guide and model once on ``args``; a failure is one :class:`UserError`
        line (Pyro's trace-shape table dropped) that names the labels when they were given."""
        with self.scope(), torch.no_grad():
            try:
                guide_tr = poutine.trace(self.guide).get_trace(*args)
                model_tr = poutine.trace(poutine.replay(self.model, trace=guide_tr)).get_trace(
                    *args
                )
                model_tr.compute_log_prob()  # the data must lie in the likelihood's support
            except UserError:
                raise
            except Exception as exc:
                first = first_line(exc)
                if isinstance(exc, ValueError) and "Expected value argument" in first:
                    raise UserError(
                        f"{self.name}'s model cannot score this data: an observed value lies "
                        "outside its likelihood's support (for a Bernoulli likelihood binarize "
                        "the data with --binarize, use a gaussian likelihood, or pass "
                        "validate_args=False)"
                    ) from None
                hint = "check that the programs fit the data's shape"
                if self.binder is not None:
                    fed = ", ".join(f"{k} <- {v}" for k, v in self.binder.bound.items())
                    hint = f"check that the programs fit the arrays bound by name ({fed})"
                if labelled:
                    hint = (
                        f"the labels were passed as {self.label_form} ({_LABEL_HINT}); declare "
                        "label_form = 'ids' | 'onehot' | 'float' on the model class if it "
                        "wants another form"
                    )
                raise UserError(
                    f"running {self.name}'s model and guide on a "
                    f"{'labelled ' if labelled else ''}batch of the data failed: "
                    f"{type(exc).__name__}: {first}; {hint}"
                ) from None
        return model_tr, guide_tr

    def _trace_once(
        self, args: tuple, describe: bool = True, x: torch.Tensor | None = None
    ) -> None:
        labelled = len(args) > 1 and self.binder is None
        model_tr, guide_tr = self._run_once(args, labelled)
        self._collect_parameters(model_tr, guide_tr)
        if describe:
            self._describe(model_tr, guide_tr, args[0] if x is None else x)

    def _collect_parameters(self, model_tr, guide_tr) -> None:
        owned = {id(p) for o in self.owners for p in o.parameters()}
        params = self._state["params"]
        for tr in (guide_tr, model_tr):
            for name, site in tr.nodes.items():
                if site["type"] != "param" or name not in params:
                    continue
                leaf = params[name]
                if id(leaf) in owned or _store_key(name) in self.store:
                    continue
                if not isinstance(leaf, nn.Parameter):
                    leaf = nn.Parameter(leaf.detach())  # same storage, now a module parameter
                    params[name] = leaf
                self.store[_store_key(name)] = leaf

    def _describe(self, model_tr, guide_tr, x: torch.Tensor) -> None:
        """Set the attributes the class docstring lists from one trace of the pair on a
        batch whose data view is ``x``."""
        batch = x.shape[0]
        guide_tr, model_tr = prune_subsample_sites(guide_tr), prune_subsample_sites(model_tr)
        latent = latent_names(guide_tr)
        observed = observed_names(model_tr)
        self._check_sites(model_tr, latent, observed)
        # local sites (inside the data plate) are the codes; global ones are shared
        local = [n for n in latent if is_local(guide_tr.nodes[n], batch)]
        self.all_latent_sites = tuple(latent)
        self.latent_sites = tuple(local)
        self.global_sites = tuple(n for n in latent if n not in local)
        self.observed_sites = tuple(observed)
        self._describe_observed(model_tr, x)
        self.latent_sizes = tuple(
            max(1, guide_tr.nodes[n]["value"].numel() // max(batch, 1)) for n in local
        )
        self.max_plate_nesting = plate_nesting(model_tr, guide_tr)
        self.has_prior = any(model_tr.nodes[n]["mask"] is not False for n in latent)
        self.point_mass = all(_is_point_mass(guide_tr.nodes[n]["fn"]) for n in latent)
        self.model_order = tuple(n for n in sample_names(model_tr) if n in latent)
        self.mean_field = self.model_order == self.all_latent_sites
        self.reparameterized = all(
            getattr(guide_tr.nodes[n]["fn"], "has_rsample", False) for n in latent
        )
        self.enumerated = enumerated_sites(guide_tr, latent)
        self.scaled = scales_sites(model_tr, guide_tr)
        self.model_enumerated = model_enumerated_sites(model_tr, latent)
        self.analytic_kl_sites = analytic_sites(model_tr, guide_tr, latent)

    def _check_sites(self, model_tr, latent: list[str], observed: list[str]) -> None:
        """One :class:`UserError` where the pair is no model/guide pair: a guide with no
        latent site, a model with no observed one, or a latent site the model lacks."""
        if not latent:
            raise UserError(
                f"{self.name}'s guide samples no latent site; the guide must pyro.sample "
                "every latent variable the model samples"
            )
        if not observed:
            raise UserError(
                f"{self.name}'s model conditions no site on the data; score the batch with "
                "pyro.sample(name, distribution, obs=x)"
            )
        missing = [n for n in latent if n not in model_tr.nodes]
        if missing:
            raise UserError(
                f"the guide samples {', '.join(missing)} but the model does not; model and "
                "guide must sample the same latent sites"
            )

    def _describe_observed(self, model_tr, x: torch.Tensor) -> None:
        """The observed site(s) that score x itself (``data_sites``; others may score
        labels, as in M2: ``label_sites``), and ``x_shaped``: some observed site scores x
        itself, so reconstructions are x-shaped and can be compared with x and drawn as x
        (Pyro's CVAE scores 588 of 784 pixels)."""
        observed, numel = self.observed_sites, x.numel()
        data_sites = [n for n in observed if model_tr.nodes[n]["value"].numel() == numel]
        self.x_shaped = bool(data_sites)
        self.data_sites = tuple(data_sites or observed)
        self.label_sites = tuple(n for n in observed if n not in self.data_sites)

    def vectorized(self, key: str, fast: Callable[[], Any], slow: Callable[[], Any]) -> Any:
        """``fast()`` (the programs under an outer particle plate) where they allow it,
        else ``slow()`` (one draw at a time). ``key`` names the way the programs run; a
        shape error sends that key to ``slow()`` from then on, also after the fast path
        once worked (a layer such as BatchNorm1d may accept one batch size under the
        particle plate and not another), and ``slow()`` raises what is really wrong. Any
        exception of the fast path counts (a program's own ``assert`` on a shape, as AIR's,
        raises AssertionError), never only a few types.
        Programs with a batch- or instance-norm layer always run ``slow()``: BatchNorm1d
        reads ``(particles, batch, features)`` as ``(N, C, L)``, so where the batch size
        equals its features (ProdLDA: 100 words, a batch of 100) the fast path runs without
        error and normalises example ``j`` with feature ``j``'s statistics."""
        if self._vectorizes.get(key) is None and any(
            isinstance(m, NORM_LAYERS) for m in self.modules()
        ):
            self._vectorizes[key] = False
        if self._vectorizes.get(key) is not False:
            try:
                out = fast()
                self._vectorizes[key] = True
                return out
            except Exception:  # whatever the programs raise: slow() says what is wrong
                self._vectorizes[key] = False
        return slow()

    @property
    def latent_dim(self) -> int:
        """Values per example over all latent sites."""
        return sum(self.latent_sizes)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def forward(self, *args, **kwargs):  # pragma: no cover - a container, not a layer
        raise TypeError("Programs holds a model and a guide; call .model or .guide")


def from_object(obj: Any, example, name: str | None = None) -> Programs:
    """:class:`Programs` of an object with ``model`` and ``guide`` (a suite model, or a
    Pyro-tutorial-style ``nn.Module``)."""
    return Programs(obj.model, obj.guide, example, name=name or type(obj).__name__)


def label_predictor(pair: Programs) -> tuple[str, Callable[[torch.Tensor], Any]] | None:
    """The label predictor the programs declare, as ``(name, predict)``, or None.

    A program states it on the module its programs belong to, as it states
    ``train_defaults``: ``label_predictor = "classify"`` (the name of a method taking the
    data x and returning class ids ``(N,)`` or one row per example ``(N, C)``), or the
    method itself. Nothing is guessed from a method's name: a ``classifier`` attribute
    may be q(y|x) (Pyro's ss-vae M2) or q(y|z) (scANVI), and only its author knows.
    A declaration naming no method raises :class:`~ppl_vae.errors.UserError`.
    """
    from ppl_vae.errors import UserError

    for owner in pair.owners:
        declared = getattr(type(owner), "label_predictor", None)
        if declared is None:
            continue
        if isinstance(declared, str):
            name, predict = declared, getattr(owner, declared, None)
        else:  # the method itself (``label_predictor = classify``): bound to the owner
            name, predict = getattr(declared, "__name__", "label_predictor"), owner.label_predictor
        if not callable(predict):
            raise UserError(
                f"{type(owner).__name__}.label_predictor = {declared!r} names no method of "
                "it; name the method that predicts the labels from x"
            )
        return name, predict
    return None
