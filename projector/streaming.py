"""Ridge on random features without the feature matrix: the Gram is accumulated block by block.

``StreamingRidgeClassifier(projection)`` fits ``RidgeClassifier`` on ``projection``'s
features ``Y = proj(X)`` without ever holding R or ``Y: (n, k)``:

* **dual** (k > n_train): pass 1 streams ``projection.iter_blocks`` over the train and
  validation rows, centres each block of columns with its training mean and adds the
  block's (N, N) Gram (BLAS ``ssyrk``, float32); the grid is solved on it in float64
  (``ridge.dual_fit``: train kernel, validation cross-kernel and, double-centred, the
  refit kernel are all blocks of the one Gram). Pass 2 streams the blocks again and
  forms the primal weights ``W[cols] = Z_block^T beta`` (k x classes; Z the block centred
  with the training mean, as in pass 1), so the model
  predicts new samples by streaming their features against W.
  Memory: ``N^2`` float32 + the float64 solve of the grid + one block ``(N, block)``
  + the projection's buffers (one block of R, drawn once per block for all parts, and
  a ~256 MB float copy of a chunk of X's rows), whatever k.
* **primal** (k <= n_train): rows are streamed in chunks whose features
  ``(rows, k)`` are formed whole; ``Y^T Y`` (k, k) and ``Y^T labels`` are accumulated,
  shifted by a pilot mean against cancellation. Since k <= n, the memory
  (``k^2 + rows * k``) is again bounded by ``n^2``. Validation rows are projected a
  second time to score every alpha at once.

``solver="auto"`` picks dual when k > n_train. The float32 Gram with float64 solve
reproduces ``RidgeClassifier`` on the materialised features to float32 rounding.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch

from sklearn.base import clone

from projector._base import _ClassifierBase
from projector._factor import _solve_psd
from projector._fits import dual_fit, dual_loo, primal_loo
from projector._labels import _accuracy
from projector._linalg import _centre_, _col_means64, _rows_mm, _symmetrize_, _syrk_, check_finite_gram
from projector._solvers import _ShiftedSolver, grid_solver_for
from projector._validation import _check_fitted, check_finite_fit, check_memory
from projector.structured import StructuredProjection

__all__ = ["StreamingRidgeClassifier", "feature_matrix_bytes"]

_ROW_CHUNK_BYTES = 256 << 20  # primal: features of one row chunk; dual: float copy of X's rows


def _lockstep(iters):
    """Blocks of several ``iter_blocks`` in lockstep: (cols, [block of each part]), keeping no
    reference to a block once the next is asked for (``zip`` would: it keeps its last tuple
    until the next one is complete, two blocks alive at once)."""
    while iters:
        cols, blocks = None, []
        for it in iters:
            item = next(it, None)
            if item is None:
                return
            cols = item[0] if cols is None else cols
            blocks.append(item[1])
            del item
        yield cols, blocks
        del blocks


def _fit_bytes(k: int, N: int, c: int, solver: str, n_parts: int) -> int:
    """Bytes a fit on N rows (c classes) with k features holds: the Gram (float32, and its float64
    solve), the feature means and the weights (float64, then float32 coef_), a block of features."""
    per_feature = 8 + 8 * c + 4 * c  # mean, W, coef_
    if solver == "dual":  # + two blocks of at most 8,192 features of the N rows
        return 4 * N * N + 2 * 8 * N * N + k * per_feature + 2 * 4 * N * min(k, 8192)
    return (4 * n_parts + 2 * 8) * k * k + k * per_feature + _ROW_CHUNK_BYTES


def feature_matrix_bytes(n_rows: int, n_components: int) -> int:
    """Bytes of a float32 (n_rows, n_components) feature matrix."""
    return int(n_rows) * int(n_components) * 4


class StreamingRidgeClassifier(_ClassifierBase):
    """RidgeClassifier on ``projection``'s features, fitted and applied block by block.

    X: (n_samples, n_features) encoded inputs (what the projection takes), never the
    features themselves.

    Parameters
    ----------
    projection : a random projection with ``iter_blocks`` and ``block_size``
        (GaussianProjection, LinearProjection, StructuredProjection); fitted on X if not yet.
    alphas, fit_intercept, refit, grid_solver : as for RidgeClassifier.
    solver : "auto" (dual if n_components > n_samples), "primal" or "dual".
    block_size : columns per block in the dual passes (None: the projection's own, or
        1024 on CPU / 8192 on CUDA); every part of the data is streamed with the same.
    progress : tqdm bars over the passes.

    Attributes
    ----------
    coef_ : (n_classes, n_components) float32 ((1, k) for two classes); intercept_ (c,).
    alpha_, alphas_, val_scores_, cv_, solver_, grid_solver_, classes_ : as for RidgeClassifier.
    gram_bytes_ : bytes of the accumulated Gram (N^2 * 4 dual, k^2 * 4 primal).
    """

    def __init__(
        self,
        projection,
        alphas: float | Sequence[float] | None = None,
        fit_intercept: bool = True,
        solver: str = "auto",
        refit: bool = True,
        grid_solver: str = "auto",
        block_size: int | None = None,
        progress: bool = False,
    ):
        self.projection = projection
        self.alphas = alphas
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.refit = refit
        self.grid_solver = grid_solver
        self.block_size = block_size
        self.progress = progress

    # -- fit --

    def fit(self, X, y, X_val=None, y_val=None) -> "StreamingRidgeClassifier":
        """X: (n_samples, n_features) encoded; y: (n_samples,); optional X_val, y_val (without
        them: exact leave-one-out over the grid)."""
        if not hasattr(self.projection, "iter_blocks"):
            raise TypeError(f"{type(self.projection).__name__} has no iter_blocks: it cannot be streamed.")
        data = self._prepare_fit(X, y, X_val, y_val)
        X, n = data.X, data.X.shape[0]
        # the projection is a parameter: fitted as a copy (it only records shapes; R follows from the seed)
        self.projection_ = clone(self.projection, safe=False).fit(X)
        parts, Y = [X], data.Y
        if data.X_val is not None:
            parts.append(data.X_val)
            Y = torch.cat([Y, data.Yv])
        k = int(self.projection_.n_components if self.projection_.n_components is not None else X.shape[1])
        self.n_components_ = k
        solver = self.solver if self.solver != "auto" else ("dual" if k > n else "primal")
        N, c = sum(P.shape[0] for P in parts), Y.shape[1]
        check_memory(f"{type(self).__name__}.fit on {N:,} rows", lambda kk: _fit_bytes(kk, N, c, solver, len(parts)),
                     k, X.device, "its Gram, weights and feature means" + (", (N, N) for the dual" if solver == "dual"
                                                                           else ", (k, k) for the primal"),
                     "or fewer rows" + (" (the dual Gram is N x N)." if solver == "dual" else "."))
        self.solver_ = solver
        if solver == "dual":
            W, b, centre = self._fit_dual(parts, Y, n, data.yv_idx, data.y_idx)
        else:
            W, b, centre = self._fit_primal(parts, Y, n, data.yv_idx, data.y_idx)
        check_finite_fit(type(self).__name__, X, W, b)
        self._set_linear(W, b, centre, data.kind)  # predict centres the features with ``centre``
        return self

    def _proj(self):
        return getattr(self, "projection_", self.projection)

    def _stream(self, device):
        """A copy of the projection with a fixed block size (all parts share their column
        blocks) and bounded row chunks (its float copy of X stays small)."""
        proj = self._proj()
        if not hasattr(proj, "block_size"):
            return proj
        proj = copy.copy(proj)
        bs = self.block_size or proj.block_size
        proj.block_size = bs or (8192 if torch.device(device).type == "cuda" else 1024)
        # The dense projections' row chunks bound their float copy of X. StructuredProjection's
        # are its work array (rows, transforms, d), cache-sized by default: 784 rows of
        # d = 131,072 there took ~2 GB of FWHT temporaries and ran slower.
        if hasattr(proj, "row_chunk_size") and proj.row_chunk_size is None and \
                not isinstance(proj, StructuredProjection):
            proj.row_chunk_size = max(64, _ROW_CHUNK_BYTES // (4 * self.n_features_in_))
        return proj

    def _blocks(self, parts, desc):
        """Yield (cols, [Y_part_block for each part]), each block of R drawn once for all parts
        when the projection can (``iter_blocks_multi``), else in lockstep. No reference to a
        block is kept once the consumer asks for the next one (a structured block of 5,000
        rows is 1.3 GB)."""
        proj = self._stream(parts[0].device)
        it = proj.iter_blocks_multi(parts) if hasattr(proj, "iter_blocks_multi") else \
            _lockstep([proj.iter_blocks(P) for P in parts])
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(desc=desc, unit="block", leave=False)
        for cols, blocks in it:
            if bar is not None:
                bar.update(1)
            yield cols, blocks
            del blocks
        if bar is not None:
            bar.close()

    def _stacked_blocks(self, parts, desc):
        """Yield (cols, Z: (N, width) float32), the features of the stacked parts block by block.

        Each part's block stacked into one (a copy of the block's features: the projection's
        blocks may be views of its input), unless a copy of the inputs is smaller than that
        (wide blocks: a structured block is whole transforms of d/2 columns, 65,536 at
        m = 81,536): then a stacked copy of the rows is projected as one input, and no block
        is copied. Z is the consumer's to modify."""
        proj = self._stream(parts[0].device)
        width = proj.block_width() if hasattr(proj, "block_width") else int(getattr(proj, "block_size", None) or 0)
        if parts[0].shape[1] * parts[0].element_size() < 4 * width:
            stacked = [torch.cat(parts)]  # our copy: its blocks are ours to centre in place
            for cols, (Zb,) in self._blocks(stacked, desc):
                yield cols, Zb
                del Zb
            return
        for cols, blocks in self._blocks(parts, desc):
            Zb = torch.cat(blocks)
            del blocks
            yield cols, Zb
            del Zb

    def _dual_gram(self, parts):
        """Pass 1: the (N, N) float32 Gram of the stacked parts' features, centred with the
        training (first part's) mean, and that mean (k,) float64 (zeros without intercept)."""
        device = parts[0].device
        N = sum(P.shape[0] for P in parts)
        Kz = torch.zeros(N, N, dtype=torch.float32, device=device)
        self.gram_bytes_ = Kz.nbytes
        k = self._proj().n_components
        mu = torch.zeros(int(k if k is not None else parts[0].shape[1]), dtype=torch.float64, device=device)
        n = parts[0].shape[0]
        for cols, Zb in self._stacked_blocks(parts, "stream pass 1/2 (Gram)"):  # (N, width) float32
            m_b = _col_means64(Zb[:n])  # in row chunks: mean(dtype=float64) copies Zb to float64
            mu[cols] = m_b  # without an intercept, only predict's centre
            if self.fit_intercept:
                _centre_(Zb, m_b)
            _syrk_(Kz, Zb, rows=True)  # tiled past 2**31 elements (N > 46,340)
            del Zb
        return check_finite_gram(_symmetrize_(Kz), parts, "X's projected features"), mu

    def _fit_dual(self, parts, Y, n, yv_idx, y_idx):
        device = parts[0].device
        k = self.n_components_
        Kz, mu = self._dual_gram(parts)
        if yv_idx is None and (self.alphas is None or np.size(self.alphas) > 1):
            zero = torch.zeros(Y.shape[1], dtype=torch.float64, device=device)
            y_mean = Y.mean(0) if self.fit_intercept else zero
            fit = dual_loo(Kz, Y - y_mean, y_mean, y_idx, self._resolve_alphas, self.fit_intercept)
            fit.update(offset=y_mean, n_used=n, grid_solver="eigh")
        else:
            alphas = self._resolve_alphas(float(Kz[:n, :n].diagonal().sum(dtype=torch.float64)) / n)
            fit = dual_fit(Kz, Y, n, yv_idx, alphas, self.grid_solver, self.refit,
                           fit_intercept=self.fit_intercept, overwrite_gram=True)
            fit["alphas"] = alphas
        del Kz
        self._record_fit(fit, yv_idx)
        beta = fit["beta"]
        used = parts if fit["n_used"] > n else parts[:1]
        W = torch.empty(k, beta.shape[1], dtype=torch.float64, device=device)
        for cols, Zb in self._stacked_blocks(used, "stream pass 2/2 (weights)"):
            # W = Z^T beta with Z centred with the training mean as in pass 1, so that
            # x -> (y(x) - mu) . W + offset is kz(x) beta + offset exactly. (beta sums to zero
            # only to rounding: Y^T beta would add that rounding times the features' mean.)
            # In float64 row chunks: a float64 copy of a whole block would be 2x its size.
            m_b = mu[cols] if self.fit_intercept else None
            step = max(1, _ROW_CHUNK_BYTES // (2 * 8 * Zb.shape[1]))
            acc = torch.zeros(Zb.shape[1], beta.shape[1], dtype=torch.float64, device=device)
            for r0 in range(0, Zb.shape[0], step):
                Zc = Zb[r0:r0 + step].to(torch.float64)
                if m_b is not None:
                    Zc.sub_(m_b)
                acc.addmm_(Zc.T, beta[r0:r0 + step])
            W[cols] = acc
            del Zb
        b = fit["offset"] - (mu @ W if self.fit_intercept else 0.0)
        return W, b, mu

    def _row_features(self, X):
        """Yield (r0, features (rows, k) float32) over row chunks of X."""
        k = self.n_components_
        step = max(1, _ROW_CHUNK_BYTES // (4 * k))
        for r0 in range(0, X.shape[0], step):
            yield r0, self._proj().transform(X[r0:r0 + step])

    def _shifted_sums(self, parts, Y):
        """Per part, streamed once: G = sum (y - p)(y - p)^T (float32), s = sum (y - p) and
        B = sum (y - p) Y^T (float64), about the pilot mean p of the first chunk. Returns (G, s, B, p)."""
        device = parts[0].device
        k = self.n_components_
        c = Y.shape[1]
        G = [torch.zeros(k, k, dtype=torch.float32, device=device) for _ in parts]
        s = [torch.zeros(k, dtype=torch.float64, device=device) for _ in parts]
        B = [torch.zeros(k, c, dtype=torch.float64, device=device) for _ in parts]
        self.gram_bytes_ = sum(g.nbytes for g in G)
        pilot = None
        offsets = [0, parts[0].shape[0]]
        for i, P in enumerate(parts):
            for r0, F in self._row_features(P):
                if pilot is None:
                    # float32-representable: the shift applied to F below is exactly this one
                    pilot = F.mean(0, dtype=torch.float64).float().double() if self.fit_intercept else \
                        torch.zeros(k, dtype=torch.float64, device=device)
                if F.untyped_storage().data_ptr() == P.untyped_storage().data_ptr():
                    F = F.clone()  # the features are X itself (NoProjection): never shift the caller's data
                F.sub_(pilot.float())
                _syrk_(G[i], F, rows=False)
                s[i] += F.sum(0, dtype=torch.float64)
                rows = slice(offsets[i] + r0, offsets[i] + r0 + F.shape[0])
                B[i] += (Y[rows].T @ F.double()).T
            check_finite_gram(_symmetrize_(G[i]), parts, "X's projected features")
        return G, s, B, pilot

    def _fit_primal(self, parts, Y, n, yv_idx, y_idx):
        device = parts[0].device
        k = self.n_components_
        c = Y.shape[1]
        G, s, B, pilot = self._shifted_sums(parts, Y)
        # train: centred Gram and right-hand side
        y_tr = Y[:n].mean(0) if self.fit_intercept else torch.zeros(c, dtype=torch.float64, device=device)
        d_tr = s[0] / n if self.fit_intercept else torch.zeros(k, dtype=torch.float64, device=device)
        mu_tr = pilot + d_tr
        G_tr = G[0].double().sub_(n * torch.outer(d_tr, d_tr))
        B_tr = B[0] - n * torch.outer(d_tr, y_tr)  # sum (y - mu)(Y - ymean)^T
        if yv_idx is None and (self.alphas is None or np.size(self.alphas) > 1):
            # leave-one-out: G_tr's eigenbasis, and the training rows' features streamed once more
            Yc = Y[:n] - y_tr
            rows = lambda: ((r0, F - mu_tr.float()) for r0, F in self._row_features(parts[0]))  # noqa: E731
            fit = primal_loo(G_tr, B_tr, rows, Yc, y_tr, y_idx, self._resolve_alphas, n, self.fit_intercept)
            self._record_fit({**fit, "grid_solver": "eigh"}, None)
            return fit["W"], y_tr - mu_tr @ fit["W"], mu_tr
        alphas = self._resolve_alphas(float(G_tr.diagonal().sum()) / n)
        has_val = yv_idx is not None
        method = grid_solver_for(k, len(alphas) if has_val else 1, device, self.grid_solver)
        shifted = _ShiftedSolver(G_tr, method)
        Ws = shifted.solve_all(B_tr, alphas if has_val else alphas[:1])
        scores = None
        if has_val:
            Wcat = torch.cat(Ws, 1)  # (k, n_alphas * c): every alpha in one pass over the validation rows
            S = torch.cat([(F.double() - mu_tr) @ Wcat for _, F in self._row_features(parts[1])])
            scores = [_accuracy(S[:, i * c:(i + 1) * c] + y_tr, yv_idx) for i in range(len(alphas))]
            best = max(range(len(alphas)), key=lambda i: (scores[i], alphas[i]))
        else:
            best = 0
        alpha = float(alphas[best])
        if has_val and self.refit:
            N = sum(P.shape[0] for P in parts)
            y_all = Y.mean(0) if self.fit_intercept else torch.zeros(c, dtype=torch.float64, device=device)
            d_all = (s[0] + s[1]) / N if self.fit_intercept else torch.zeros(k, dtype=torch.float64, device=device)
            G_all = G[0].double().add_(G[1].double()).sub_(N * torch.outer(d_all, d_all))
            B_all = B[0] + B[1] - N * torch.outer(d_all, y_all)
            W = _solve_psd(G_all, B_all, alpha)
            b = y_all - (pilot + d_all) @ W
        else:
            W = Ws[best]
            b = y_tr - mu_tr @ W
        self._record_fit({"alpha": alpha, "alphas": alphas, "scores": scores, "grid_solver": method}, yv_idx)
        return W, b, mu_tr

    def _record_fit(self, fit, yv_idx):
        self._record(fit, None)
        self.cv_ = None if fit["scores"] is None else ("validation" if yv_idx is not None else "loo")

    # -- predict --

    def _decision(self, X) -> torch.Tensor:
        """X: (n, m) encoded tensor -> (n, c) float32 scores, the features streamed block by block."""
        coef = torch.as_tensor(self.coef_, device=X.device)
        S = self._offset(X.device).expand(X.shape[0], -1).clone()
        # rows in chunks whose blocks stay within 2 x _ROW_CHUNK_BYTES: a structured block of
        # 8,000 test rows would be 2.1 GB (narrow blocks leave X whole, R drawn once per block)
        proj = self._stream(X.device)
        step = max(1, 2 * _ROW_CHUNK_BYTES // (4 * proj.block_width())) if hasattr(proj, "block_width") \
            else max(X.shape[0], 1)
        for r0 in range(0, X.shape[0], step):
            for cols, (Yb,) in self._blocks([X[r0:r0 + step]], "predict"):
                S[r0:r0 + step] += _rows_mm(Yb, coef[:, cols].T.contiguous(), lambda rows: self._centred(rows, cols))
                del Yb
        return S

    @property
    def weight_bytes(self) -> int:
        """Bytes of ``coef_`` plus ``intercept_`` (R is never held); ``NotFittedError`` before :meth:`fit`."""
        _check_fitted(self, "coef_")
        return int(self.coef_.nbytes + self.intercept_.nbytes)

