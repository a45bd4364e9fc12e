"""NN-SNAP training in torch on cached descriptors and descriptor gradients.

Forces are ``F = -sum_i (dE_i/dB_i) . dB_i/dr`` with the descriptor gradients
fixed (computed once, :mod:`ase_mlp.training.features`), so a training step
costs one network pass, one double-backward and a contraction per edge, never
a descriptor evaluation. The loss is the one of the linear fitters:
``w_E MSE(E/N) + w_F MSE(F) + w_S MSE(stress in GPa)`` with per-frame and
per-element force weights.

Schedule: Adam with the learning rate halved when the validation loss stalls,
early stopping on the validation loss (the best state is kept), then an
optional L-BFGS polish on the whole training set. Training may run in float32;
the model is returned in float64. Runs are deterministic given ``seed``, and
with ``checkpoint`` they can be interrupted and resumed bit for bit.
"""

from __future__ import annotations

import copy
import math
import pathlib

import numpy as np
import torch
from ase import units

from ase_mlp.training.features import Batch, FrameFeatures, collate, predict


_ACT = {"linear": lambda x: x, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}


class _Energy:
    """Differentiable per-atom energy of an NNSNAP (params stay in the graph)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, B, species):
        m = self.model
        x = (B - m.mean.index_select(0, species)) / m.std.index_select(0, species)
        e = B.new_zeros(B.shape[0])
        for el, layers in enumerate(m.networks):
            idx = torch.nonzero(species == el).squeeze(1)
            if idx.numel() == 0:
                continue
            h = x.index_select(0, idx)
            for lin, act in zip(layers, m.activations, strict=True):
                h = _ACT[act](torch.nn.functional.linear(h, lin.weight, lin.bias))
            e = e.index_copy(0, idx, h.squeeze(-1))
        return e


def loss_terms(batch: Batch, energy, forces, stress, weights, element_w):
    """Weighted mean-square errors per kind (energy per atom, forces, stress in GPa)."""
    wE, wF, wS = weights
    total = energy.new_zeros(())
    parts = {}
    if wE > 0 and batch.has_energy.any():
        m = batch.has_energy
        r = (energy[m] - batch.energy[m]) / batch.n_atoms[m]
        w = (batch.weight * batch.kind_weights[:, 0])[m]
        parts["energy"] = (w * r * r).sum() / m.sum()
        total = total + wE * parts["energy"]
    if wF > 0 and batch.has_forces.any():
        m = batch.has_forces
        r = forces[m] - batch.forces[m]
        wf = (batch.weight * batch.kind_weights[:, 1]).index_select(0, batch.atom_frame)
        w = (wf * element_w.index_select(0, batch.species))[m]
        parts["forces"] = (w.unsqueeze(1) * r * r).sum() / (3 * m.sum())
        total = total + wF * parts["forces"]
    if wS > 0 and batch.has_stress.any():
        m = batch.has_stress
        r = (stress[m] - batch.stress[m]) / units.GPa
        ws = (batch.weight * batch.kind_weights[:, 2])[m]
        parts["stress"] = (ws.unsqueeze(1) * r * r).sum() / (6 * m.sum())
        total = total + wS * parts["stress"]
    return total, parts


def standardise(model, frames: list[FrameFeatures]):
    """Set the model's descriptor mean/std per element from the training frames."""
    ne, K = model.mean.shape
    mean = np.zeros((ne, K))
    std = np.ones((ne, K))
    allB = torch.cat([f.B for f in frames]).double()
    sp = torch.cat([f.species for f in frames])
    for el in range(ne):
        Be = allB[sp == el]
        if Be.shape[0] == 0:
            continue
        mean[el] = Be.mean(0).numpy()
        s = Be.std(0, unbiased=False).numpy() if Be.shape[0] > 1 else np.ones(K)
        std[el] = np.where(s > 1e-8 * max(1.0, np.abs(mean[el]).max()), s, 1.0)
    with torch.no_grad():
        model.mean.copy_(torch.as_tensor(mean))
        model.std.copy_(torch.as_tensor(std))


def energy_offsets(frames: list[FrameFeatures], n_elements: int) -> np.ndarray:
    """Per-element energies from least squares of frame energies on element counts."""
    rows, y = [], []
    for f in frames:
        if f.energy is not None:
            rows.append(np.bincount(f.species.numpy(), minlength=n_elements))
            y.append(f.energy)
    if not rows:
        return np.zeros(n_elements)
    A = np.asarray(rows, dtype=float)
    x, *_ = np.linalg.lstsq(A, np.asarray(y), rcond=None)
    return x


def init_network(model, generator: torch.Generator, offsets):
    """Deterministic initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), last bias = offset."""
    with torch.no_grad():
        for el, layers in enumerate(model.networks):
            for k, lin in enumerate(layers):
                bound = 1.0 / math.sqrt(lin.in_features)
                w = torch.rand(lin.weight.shape, generator=generator, dtype=torch.float64)
                lin.weight.copy_((2 * w - 1) * bound)
                lin.bias.zero_()
                if k == len(layers) - 1:
                    lin.weight.mul_(0.1)
                    lin.bias.fill_(float(offsets[el]))


def _save_atomic(obj, path):
    from ase_mlp.models.serialization import with_checksum

    path = pathlib.Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(with_checksum(obj), tmp)
    tmp.replace(path)


def _load_checkpoint(path):
    """A checkpoint written by :func:`_save_atomic`, its checksum verified (older
    checkpoints without one load as before)."""
    from ase_mlp.models.serialization import verify_checksum

    saved = torch.load(path, map_location="cpu", weights_only=True)
    verify_checksum(saved, path, "NN training checkpoint")
    return saved


def _train_lbfgs(model, params, energy_fn, train_full, val_batch, weights, element_w,
                 max_iter, evaluate, progress, *, chunk=25, patience=8, ckpt=None, resume=False,
                 log=None, checkpoint_every=1):
    """Full-batch L-BFGS in chunks of ``chunk`` iterations, keeping the best validation state.

    Stops after ``max_iter`` iterations or ``patience`` chunks without improvement.
    With ``ckpt`` the state is saved after every ``checkpoint_every`` chunks and a
    ``resume`` continues from it.
    """
    lbfgs = torch.optim.LBFGS(params, lr=1.0, max_iter=chunk, line_search_fn="strong_wolfe",
                              history_size=50, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        lbfgs.zero_grad()
        e, f, s = predict(train_full, energy_fn, create_graph=True)
        loss, _ = loss_terms(train_full, e, f, s, weights, element_w)
        loss.backward()
        return loss

    judge = val_batch if val_batch is not None else train_full
    state = None
    if resume and ckpt is not None and ckpt.exists():
        saved = _load_checkpoint(ckpt)
        model.load_state_dict(saved["model"])
        lbfgs.load_state_dict(saved["optimizer"])
        state = saved["state"]
    if state is None:
        start = evaluate(judge)[0]
        state = {"iterations": 0, "start": start, "best": start, "bad": 0, "history": [],
                 "best_state": copy.deepcopy(model.state_dict())}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, initial=state["iterations"], desc="NN-SNAP L-BFGS", unit="it")
    chunks = 0
    while state["iterations"] < max_iter and state["bad"] < patience:
        lbfgs.step(closure)
        state["iterations"] += chunk
        chunks += 1
        score = evaluate(judge)[0]
        train_loss = evaluate(train_full)[0] if val_batch is not None else score
        state["history"].append({"epoch": state["iterations"], "train": train_loss,
                                 "validation": score if val_batch is not None else None})
        if math.isfinite(score) and score < state["best"] * (1 - 1e-6):
            state["best"], state["bad"] = score, 0
            state["best_state"] = copy.deepcopy(model.state_dict())
        else:
            state["bad"] += 1
        if bar is not None:
            bar.set_postfix(train=f"{train_loss:.3e}", val=f"{score:.3e}")
            bar.update(chunk)
        if log is not None:
            log(state["history"][-1])
        done = state["iterations"] >= max_iter or state["bad"] >= patience
        if ckpt is not None and (chunks % checkpoint_every == 0 or done):
            _save_atomic({"model": model.state_dict(), "optimizer": lbfgs.state_dict(),
                          "state": state}, ckpt)
    if bar is not None:
        bar.close()
    model.load_state_dict(state["best_state"])
    return {"before": state["start"], "after": state["best"], "iterations": state["iterations"],
            "history": state["history"]}


def warm_start_linear(model, train, validation, weights, element_w, z_max=0.05):
    """Start the network at the linear-SNAP least-squares solution.

    Linear SNAP is fitted in closed form on the same data and loss; hidden unit 0
    of every layer then carries ``eps * beta . x`` through the near-linear part of
    tanh (``|z| <= z_max``) and the output weight ``1/eps`` undoes the scale, so
    the network starts within ``O(z_max^2)`` of the linear model and training
    only has to learn the non-linear rest. Needs tanh hidden layers.
    """
    from ase_mlp.models.snap import LinearSNAP
    from ase_mlp.training.linear import fit_linear

    if any(a != "tanh" for a in model.activations[:-1]) or not model.hidden:
        return None
    lin = LinearSNAP(model.descriptor)
    wE, wF, wS = weights
    fit_linear(lin, train, validation or None, energy_weight=wE, force_weight=wF,
               stress_weight=wS, element_force_weights=None)
    c = lin.coefficients.detach().to(torch.float64)
    with torch.no_grad():
        for el, layers in enumerate(model.networks):
            mean, std = model.mean[el].double(), model.std[el].double()
            beta = c[el, 1:] * std  # in standardised coordinates
            c0 = float(c[el, 0] + (c[el, 1:] * mean).sum())
            xs = [(f.B[f.species == el].double() - mean) / std for f in train]
            xs = torch.cat(xs) if xs else torch.zeros((0, mean.shape[0]), dtype=torch.float64)
            if xs.shape[0] == 0:
                continue
            proj = xs @ beta
            eps = z_max / max(float(proj.abs().max()), 1e-12)
            first = layers[0]
            first.weight[0] = (eps * beta).to(first.weight.dtype)
            first.bias[0] = 0.0
            for lin_k in layers[1:-1]:
                lin_k.weight[:, 0] = 0.0
                lin_k.weight[0] = 0.0
                lin_k.weight[0, 0] = 1.0
                lin_k.bias[0] = 0.0
            out = layers[-1]
            out.weight[0, 1:] *= 0.1
            out.weight[0, 0] = 1.0 / eps
            out.bias[0] = c0
    return True


def _finish(model, reference):
    model.to(torch.float64)
    if reference is not None:
        with torch.no_grad():
            for el, layers in enumerate(model.networks):
                layers[-1].bias.add_(float(reference[el]))


def train_nn(model, train: list[FrameFeatures], validation: list[FrameFeatures] | None, *,
             energy_weight=1.0, force_weight=1.0, stress_weight=0.0, element_w=None,
             epochs=300, batch_size=8, lr=3e-3, weight_decay=0.0, patience=40,
             lr_patience=10, lr_factor=0.5, min_lr=1e-5, lbfgs_steps=0, dtype=torch.float64,
             seed=0, checkpoint=None, checkpoint_every=10, resume=False, progress=False,
             initialise=True, reference=None, log=None, optimizer="adam", max_iter=1000,
             lbfgs_patience=8, warm_start="auto"):
    """Train ``model`` (NNSNAP) in place. Returns a report dict with the history.

    ``optimizer="adam"``: minibatch Adam for ``epochs`` (then ``lbfgs_steps`` of
    full-batch L-BFGS if asked). ``optimizer="lbfgs"``: full-batch L-BFGS for up
    to ``max_iter`` iterations, started from the linear-SNAP solution
    (``warm_start="auto"`` means "linear" with L-BFGS and none with Adam, whose
    per-parameter steps would undo the small-weight embedding at once); best
    for data sets that fit in memory.
    """
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")
    if warm_start == "auto":
        warm_start = "linear" if optimizer == "lbfgs" else None
    ne = len(model.elements)
    element_w = torch.ones(ne) if element_w is None else torch.as_tensor(element_w)
    weights = (float(energy_weight), float(force_weight), float(stress_weight))
    gen = torch.Generator().manual_seed(int(seed))
    if initialise:
        standardise(model, train)
        offsets = energy_offsets(train, ne)
        init_network(model, gen, offsets)
        if warm_start == "linear":
            warm_start_linear(model, train, validation, weights, element_w)
        elif warm_start not in (None, "none"):
            raise ValueError(f"warm_start must be 'linear' or None, got {warm_start!r}")
    model.to(dtype)
    element_w = element_w.to(dtype)
    energy_fn = _Energy(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    val_batch = collate(validation).to(dtype) if validation else None

    state = {"epoch": 0, "best": math.inf, "best_state": None, "bad": 0, "history": []}
    ckpt = None if checkpoint is None else pathlib.Path(checkpoint)
    if optimizer == "adam" and resume and ckpt is not None and ckpt.exists():
        saved = _load_checkpoint(ckpt)
        if "generator" not in saved:
            raise ValueError(f"{ckpt}: checkpoint of an L-BFGS run; resume with optimizer='lbfgs'")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        state = saved["state"]

    def evaluate(batch):
        e, f, s = predict(batch, energy_fn, create_graph=False)
        loss, parts = loss_terms(batch, e, f, s, weights, element_w)
        return float(loss.detach()), {k: float(v.detach()) for k, v in parts.items()}

    if optimizer == "lbfgs":
        rep = _train_lbfgs(model, params, energy_fn, collate(train).to(dtype), val_batch,
                           weights, element_w, int(max_iter), evaluate, progress,
                           patience=int(lbfgs_patience), ckpt=ckpt, resume=resume, log=log)
        _finish(model, reference)
        return {"epochs": rep["iterations"], "best_loss": rep["after"],
                "history": rep["history"], "lbfgs": {k: rep[k] for k in
                                                     ("before", "after", "iterations")}}

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=state["epoch"], desc="NN-SNAP", unit="epoch")
    n = len(train)
    # a run that stopped early (patience) stays stopped when resumed from its checkpoint
    while state["epoch"] < epochs and state["bad"] < patience:
        perm = torch.randperm(n, generator=gen).tolist()
        tot, nb = 0.0, 0
        for a in range(0, n, batch_size):
            batch = collate([train[k] for k in perm[a:a + batch_size]]).to(dtype)
            opt.zero_grad()
            e, f, s = predict(batch, energy_fn, create_graph=True)
            loss, _ = loss_terms(batch, e, f, s, weights, element_w)
            loss.backward()
            opt.step()
            tot += float(loss.detach())
            nb += 1
        state["epoch"] += 1
        train_loss = tot / max(nb, 1)
        val_loss = evaluate(val_batch)[0] if val_batch is not None else train_loss
        state["history"].append({"epoch": state["epoch"], "train": train_loss, "validation":
                                 val_loss if val_batch is not None else None,
                                 "lr": opt.param_groups[0]["lr"]})
        if val_loss < state["best"] * (1 - 1e-6):
            state["best"] = val_loss
            state["best_state"] = copy.deepcopy(model.state_dict())
            state["bad"] = 0
        else:
            state["bad"] += 1
        # plateau of the (less noisy) training loss lowers the learning rate
        if train_loss < state.get("best_train", math.inf) * (1 - 1e-4):
            state["best_train"] = train_loss
            state["plateau"] = 0
        else:
            state["plateau"] = state.get("plateau", 0) + 1
            if state["plateau"] >= lr_patience:
                state["plateau"] = 0
                for g in opt.param_groups:
                    g["lr"] = max(g["lr"] * lr_factor, min_lr)
        if bar is not None:
            bar.set_postfix(train=f"{train_loss:.3e}", val=f"{val_loss:.3e}",
                            lr=f"{opt.param_groups[0]['lr']:.1e}")
            bar.update(1)
        if log is not None:
            log(state["history"][-1])
        stop = state["bad"] >= patience
        if ckpt is not None and (state["epoch"] % checkpoint_every == 0 or stop
                                 or state["epoch"] == epochs):
            _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(),
                          "generator": gen.get_state(), "state": state}, ckpt)
        if stop:
            break
    if bar is not None:
        bar.close()
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])

    if lbfgs_steps > 0:
        rep = _train_lbfgs(model, params, energy_fn, collate(train).to(dtype), val_batch,
                           weights, element_w, int(lbfgs_steps), evaluate, progress,
                           patience=int(lbfgs_patience))
        state["lbfgs"] = {k: rep[k] for k in ("before", "after", "iterations")}
    _finish(model, reference)
    report = {"epochs": state["epoch"], "best_loss": state["best"],
              "history": state["history"], "lbfgs": state.get("lbfgs")}
    return report
