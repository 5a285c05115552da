r"""Fitting the CP factors of the stacked Clebsch-Gordan coupling tensor (exact construction and ALS).

**Parity-coupled CP.** The fitted tensor keeps the parity zeros of the coupling tensor ``M``
(:mod:`equimol.tp.cp_coupling`) exactly, ``\tilde M = \Pi \odot [[A, B, C]]``. Alternating least
squares (ALS) on this masked objective has closed-form updates: row ``i`` of ``A`` with parity ``a`` solves
``A_i G_a = (M_(1) (B \odot C))_i`` with ``G_a = sum_{b c: a b c = 1} (B_b^T B_b) * (C_c^T C_c)``
(``B_b``: rows of parity ``b``), and likewise for ``B`` and ``C``. Fitting is deterministic for a
given seed: ``restarts`` random starts of ``warmup_iterations`` ALS sweeps, then the best is refined
until the relative error ``||M - \tilde M||_F / ||M||_F`` reaches ``tolerance``, stops improving,
or ``max_iterations`` is spent.

**Exact rank.** Slicing a block of ``M`` along one mode and taking the SVD of every slice writes it
exactly as a sum of rank-one terms; the exact rank is the smallest total over the three modes
(summed over the parity sectors, or over the paths with per-path weights). Singular values below
``1e-13 * max`` are dropped, so the exact factors reproduce ``M`` to about 1e-13 relative.

**Per-path weights.** Each rank-one term then lies inside one path's block
``M[l1 block, l2 block, l3 block]`` and carries that path's weight; blocks are fitted one by one
with the rank split in proportion to their exact ranks.

The coupling tensor and its mask live in :mod:`equimol.tp.cp_coupling`, the cache in
:mod:`equimol.tp.cp_cache`.
"""

from __future__ import annotations

import contextlib
import math
import time

import torch

from equimol.tp.cp_coupling import (
    CPFactors,
    parity_mask,
    relative_error,
)

_DROP = 1e-13  # relative singular-value cutoff of the exact construction


# --------------------------------------------------------------------------------------------
# Exact construction and blocks
# --------------------------------------------------------------------------------------------


def _sector_blocks(p1, p2, p3) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Index sets ``(I_a, J_b, K_ab)`` of the parity sectors that are not empty."""
    blocks = []
    for a in (1, -1):
        for b in (1, -1):
            rows = [torch.nonzero(p == s).flatten() for p, s in ((p1, a), (p2, b), (p3, a * b))]
            if all(r.numel() for r in rows):
                blocks.append(tuple(rows))
    return blocks


def _exact_terms(block: torch.Tensor, scale: float) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Rank-one terms ``(a, b, c)`` with ``sum a x b x c = block``, from SVDs of its slices.

    The slicing mode with the fewest terms is used; singular values below ``_DROP * scale`` are dropped.
    """
    best = None
    for mode in range(3):
        moved = block.movedim(mode, 0)
        terms = []
        for index in range(moved.shape[0]):
            U, S, Vh = torch.linalg.svd(moved[index], full_matrices=False)
            for s in range(S.numel()):
                if S[s] <= _DROP * scale:
                    break
                unit = torch.zeros(moved.shape[0], dtype=torch.float64)
                unit[index] = 1.0
                vectors = [unit, U[:, s] * S[s], Vh[s]]
                # restore the order (i, j, k): slice axis `mode` holds the unit vector
                ordered = vectors[1:]
                ordered.insert(mode, unit)
                terms.append(tuple(ordered))
        if best is None or len(terms) < len(best):
            best = terms
    return best


def _truncated_svd_terms(block: torch.Tensor, rank: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Best rank-``rank`` terms (Eckart-Young) of a block with a mode of size one."""
    mode = block.shape.index(1)
    U, S, Vh = torch.linalg.svd(block.movedim(mode, 0)[0], full_matrices=False)
    one = torch.ones(1, dtype=torch.float64)
    terms = []
    for s in range(min(rank, S.numel())):
        vectors = [U[:, s] * S[s], Vh[s]]
        vectors.insert(mode, one)
        terms.append(tuple(vectors))
    return terms


def _assemble(shape, blocks, terms_per_block, path_per_block):
    """Stack block-local terms into zero-padded ``A [d1, R]``, ``B [d2, R]``, ``C [R, d3]`` and ``term_path``."""
    d1, d2, d3 = shape
    rank = sum(len(terms) for terms in terms_per_block)
    A = torch.zeros(d1, rank, dtype=torch.float64)
    B = torch.zeros(d2, rank, dtype=torch.float64)
    C = torch.zeros(rank, d3, dtype=torch.float64)
    term_path = torch.zeros(rank, dtype=torch.int64)
    r = 0
    for (rows1, rows2, rows3), terms, path in zip(blocks, terms_per_block, path_per_block):
        for a, b, c in terms:
            A[rows1, r], B[rows2, r], C[r, rows3], term_path[r] = a, b, c, path
            r += 1
    return A, B, C, term_path


def _sub(M: torch.Tensor, rows1, rows2, rows3) -> torch.Tensor:
    return M[rows1][:, rows2][:, :, rows3]


# --------------------------------------------------------------------------------------------
# Alternating least squares
# --------------------------------------------------------------------------------------------


def _als_update(M_unfolded_product, parities, gram_left, gram_right, parity_left, parity_right):
    """Solve the normal equations of one factor, row parity by row parity."""
    rank = M_unfolded_product.shape[1]
    eye = torch.eye(rank, dtype=torch.float64)
    grams_left = {s: gram_left[parity_left == s].T @ gram_left[parity_left == s] for s in (1, -1)}
    grams_right = {s: gram_right[parity_right == s].T @ gram_right[parity_right == s] for s in (1, -1)}
    new = torch.zeros_like(M_unfolded_product)
    for t in (1, -1):
        rows = parities == t
        if not rows.any():
            continue
        # allowed when t * b * c = 1, i.e. c = t * b
        gram = grams_left[1] * grams_right[t] + grams_left[-1] * grams_right[-t]
        # tiny ridge keeps the solve defined when a factor column collapses; 1e-14 relative
        # perturbs the fit far below any tolerance used (>= 1e-9)
        ridge = 1e-14 * gram.diagonal().mean().clamp_min(1e-300)
        new[rows] = torch.linalg.solve(gram + ridge * eye, M_unfolded_product[rows].T).T
    return new


def _als_sweeps(M, mask, p1, p2, p3, A, B, C, sweeps, tolerance, check_every=10):
    """Run ALS sweeps (``C`` is ``[d3, R]`` here); stop at ``tolerance`` or on stagnation."""
    error = relative_error(M, A, B, C.T, mask)
    done = 0
    last_check = error
    while done < sweeps and error > tolerance:
        for _ in range(min(check_every, sweeps - done)):
            A = _als_update(torch.einsum("ijk,jr,kr->ir", M, B, C), p1, B, C, p2, p3)
            B = _als_update(torch.einsum("ijk,ir,kr->jr", M, A, C), p2, A, C, p1, p3)
            C = _als_update(torch.einsum("ijk,ir,jr->kr", M, A, B), p3, A, B, p1, p2)
            # balance the column norms of the three factors (the product is unchanged); keeps
            # the factors of comparable size and the float32 forward free of cancellation
            norms = torch.stack([A.norm(dim=0), B.norm(dim=0), C.norm(dim=0)]).clamp_min(1e-150)
            geometric = norms.prod(dim=0) ** (1 / 3)
            A, B, C = A * geometric / norms[0], B * geometric / norms[1], C * geometric / norms[2]
            done += 1
        error = relative_error(M, A, B, C.T, mask)
        if done % 200 == 0:  # stagnation: under 1% gain over the last 200 sweeps
            if error > 0.99 * last_check:
                break
            last_check = error
    return A, B, C, error, done


@contextlib.contextmanager
def _one_thread():
    """Run a block with one intra-op thread, then restore the caller's setting.

    The ALS operands are tiny (at most ``49 x 252`` at L = 6): with several threads each op pays
    the thread-pool hand-off, which on a loaded 2-core machine was measured 10-20x slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def fit_als(
    M: torch.Tensor,
    rank: int,
    parities: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    tolerance: float,
    seed: int,
    restarts: int = 4,
    warmup_iterations: int = 40,
    max_iterations: int = 3000,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, int]:
    """Parity-coupled ALS fit of ``M [d1, d2, d3]`` at ``rank``; returns ``A, B, C [R, d3], error, sweeps``."""
    p1, p2, p3 = parities
    mask = parity_mask(p1, p2, p3)
    generator = torch.Generator().manual_seed(seed)
    d1, d2, d3 = M.shape
    # unit-norm rank-one terms whose sum has roughly the norm of M
    scale = (M.norm().item() / math.sqrt(rank)) ** (1 / 3)
    best = None
    sweeps = 0
    for _ in range(max(1, restarts)):
        start = [scale * torch.randn(d, rank, generator=generator, dtype=torch.float64) / math.sqrt(d) for d in M.shape]
        result = _als_sweeps(M, mask, p1, p2, p3, *start, warmup_iterations, tolerance)
        sweeps += result[4]
        if best is None or result[3] < best[3]:
            best = result
        if best[3] <= tolerance:
            break
    A, B, C, error, refine = _als_sweeps(M, mask, p1, p2, p3, *best[:3], max_iterations, tolerance)
    return A, B, C.T.contiguous(), error, sweeps + refine


# --------------------------------------------------------------------------------------------
# Rank and the complete fit
# --------------------------------------------------------------------------------------------


def resolve_rank(cp_rank: int | str, lmax: int) -> int | None:
    """``cp_rank`` as an int; ``"7L2"`` is ``max(1, 7 L^2)``; ``"exact"`` gives None (exact rank)."""
    if isinstance(cp_rank, bool) or not isinstance(cp_rank, int | str):
        raise ValueError(f"cp_rank={cp_rank!r} must be a positive int, '7L2' or 'exact'")
    if isinstance(cp_rank, int):
        if cp_rank < 1:
            raise ValueError(f"cp_rank={cp_rank} must be a positive int, '7L2' or 'exact'")
        return cp_rank
    if cp_rank.upper() == "7L2":
        return max(1, 7 * lmax**2)
    if cp_rank.lower() == "exact":
        return None
    raise ValueError(f"cp_rank={cp_rank!r} must be a positive int, '7L2' (7 L^2, the TDN default) or 'exact'")


def _allocate(rank: int, exact_ranks: list[int]) -> list[int]:
    """Split ``rank`` over blocks in proportion to their exact ranks (each >= 1, <= its exact rank)."""
    total = sum(exact_ranks)
    shares = [rank * r / total for r in exact_ranks]
    alloc = [min(r, max(1, math.floor(s))) for r, s in zip(exact_ranks, shares)]
    # hand out what is left by largest remainder among blocks still below their exact rank
    order = sorted(range(len(shares)), key=lambda b: shares[b] - math.floor(shares[b]), reverse=True)
    while sum(alloc) < rank:
        grown = False
        for b in order:
            if sum(alloc) < rank and alloc[b] < exact_ranks[b]:
                alloc[b] += 1
                grown = True
        if not grown:
            break
    return alloc


def fit_factors(
    M: torch.Tensor,
    parities: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    rank: int | None,
    *,
    tolerance: float,
    seed: int,
    blocks: list | None = None,
) -> CPFactors:
    """Fit parity-exact CP factors of ``M [d1, d2, d3]``.

    Args:
        M: the coupling tensor (:func:`coupling_tensor`), float64.
        parities: component parities ``(p1 [d1], p2 [d2], p3 [d3])``.
        rank: the rank ``R``, or None for the exact rank. A rank at or above the exact rank gives
            the exact factors (at the exact rank, which is then the module's rank).
        tolerance: target of the relative reconstruction error ``||M - \tilde M||_F / ||M||_F``.
        seed: seed of the ALS starts.
        blocks: per-path weights: the paths' index sets (:func:`path_blocks`); None shares one
            weight over all terms and fits the whole tensor at once.

    Returns:
        :class:`CPFactors`; ``relative_error`` is measured on the assembled factors.
    """
    with _one_thread():
        return _fit_factors(M, parities, rank, tolerance=tolerance, seed=seed, blocks=blocks)


def _fit_factors(M, parities, rank, *, tolerance, seed, blocks) -> CPFactors:
    start = time.perf_counter()
    scale = M.abs().max().item()
    if scale == 0.0:
        raise ValueError("the coupling tensor is zero: no parity-allowed path connects these irreps")
    shared = blocks is None
    if shared:
        blocks = _sector_blocks(*parities)
    exact_terms = [_exact_terms(_sub(M, *rows), scale) for rows in blocks]
    exact_ranks = [len(terms) for terms in exact_terms]
    block_paths = [0] * len(blocks) if shared else list(range(len(blocks)))
    iterations = 0
    exact = rank is None or rank >= sum(exact_ranks)
    if exact:
        A, B, C, term_path = _assemble(M.shape, blocks, exact_terms, block_paths)
    elif shared:
        A, B, C, _, iterations = fit_als(M, rank, parities, tolerance=tolerance, seed=seed)
        term_path = torch.zeros(rank, dtype=torch.int64)
    else:
        if rank < len(blocks):
            raise ValueError(
                f"cp_rank={rank} is below the number of paths ({len(blocks)}); per-path weights "
                "(weight_sharing=False) need at least one term per path"
            )
        terms_per_block = []
        for index, (rows, alloc, terms) in enumerate(zip(blocks, _allocate(rank, exact_ranks), exact_terms)):
            if alloc >= len(terms):
                terms_per_block.append(terms)
                continue
            block = _sub(M, *rows)
            if 1 in block.shape:  # a matrix (a path with l = 0): the truncated SVD is optimal
                terms_per_block.append(_truncated_svd_terms(block, alloc))
                continue
            uniform = tuple(torch.ones(n, dtype=torch.int64) for n in block.shape)
            a, b, c, _, sweeps = fit_als(block, alloc, uniform, tolerance=tolerance, seed=seed + index)
            iterations += sweeps
            terms_per_block.append([(a[:, r], b[:, r], c[r]) for r in range(alloc)])
        A, B, C, term_path = _assemble(M.shape, blocks, terms_per_block, block_paths)
    error = relative_error(M, A, B, C, parity_mask(*parities))
    return CPFactors(A, B, C, term_path, error, exact, iterations, time.perf_counter() - start)
