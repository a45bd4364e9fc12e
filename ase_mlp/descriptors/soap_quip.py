"""QUIP/GAP's SOAP descriptor (``soap`` in a GAP ``.xml``) in torch, element for element.

Bartok, Kondor & Csanyi, Phys. Rev. B 87, 184115 (2013) (SOAP); the conventions are those
of QUIP/GAP's ``soap_initialise`` / ``soap_calc`` (``descriptors.F90`` of libAtoms/GAP,
"original" power spectrum, ``radial_basis=EQUISPACED_GAUSS``), re-derived and checked
against quippy numbers; no QUIP code is used.

The route, for a centre ``i`` and its neighbours ``j`` with ``r_ij < cutoff``:

1. Radial basis. ``n_max`` Gaussians of width ``atom_sigma`` (``alpha = 1 / (2 sigma^2)``)
   centred at ``r_a = (a - 1) * (cutoff + sigma sqrt(2 b ln 10)) / n_max``
   (``b = basis_error_exponent``). With ``C_ab = exp(-alpha (r_a - r_b)^2)`` and ``S`` the
   overlap matrix of the basis (closed form with ``erf``), ``S = L L^T`` (Cholesky) and the
   transformation ``T = C^-1 L``.
2. A neighbour Gaussian of width ``sigma`` at ``r`` projects onto ``l`` as
   ``g_la(r) = exp(-alpha (r^2 + r_a^2)) i_l(2 alpha r r_a)`` (modified spherical Bessel
   ``i_l``); coefficients ``c_nl(r) = f_cut(r) sum_a g_la(r) T_an``. ``i_l`` is evaluated
   by the upward recursion from ``sinh`` and ``cosh`` where ``x = 2 alpha r r_a`` is large,
   and by its power series where ``x`` is small (the recursion loses digits there).
3. ``f_cut`` is QUIP's cosine switch: 1 below ``cutoff - cutoff_transition_width``,
   ``(1 + cos(pi (r - cutoff + w) / w)) / 2`` in the transition, 0 beyond (times QUIP's
   optional ``cutoff_dexp`` radial decay).
4. Density of species channel ``s``: ``X_{s n l m} = sum_{j in s} c_nl(r_ij) Y_lm(r_ij)``,
   plus ``central_weight * L_{1n} * Y_00`` for ``n = 1`` on the channels of the centre's own
   species (all channels with ``central_reference_all_species``). Real orthonormal
   spherical harmonics are used: the power spectrum is invariant under the unitary change
   from QUIP's complex ones.
5. Power spectrum ``p_{(s n)(s' n') l} = sum_m X_{snlm} X_{s'n'lm} / sqrt(2 l + 1)`` for
   ``K = (s - 1) n_max + n >= K'``, times ``sqrt(2)`` when ``K != K'``; element index
   ``pair * (l_max + 1) + l`` with pairs ordered ``K = 1.., K' = 1..K``
   (``diagonal_radial``: only ``n = n'``). With ``normalise`` the vector is divided by
   its norm; a last element equal to ``covariance_sigma0`` is appended.

``xml_version`` (the ``gap_version`` attribute of ``GAP_params``; QUIP uses 0 when it is
absent and appends it to the descriptor string and calc arguments) keeps QUIP's
backward-compatible defaults: no ``1/sqrt(2l+1)`` before 1423143769,
``central_reference_all_species=T`` before 1426512068.

Implementation: kept edges are grouped by centre into a padded ``(centre, slot)`` layout
(one ``index_copy``), so the density is one batched matmul per ``l``; the radial part is
one ``(E (L+1), A) @ (A, n_max)`` product; the spherical harmonics use a recursion in
``l`` vectorised over ``m``. No Python loop runs over atoms or edges. Gradients come from
autograd (forces, virials; ``torch.autograd.gradcheck`` passes). Unsupported options
(``average=T``, channel mixing / compression, ``Z_map``, ``nu_R``/``nu_S`` other than 2,
``coupling=F``, GTO/POLY radial bases) are refused with :class:`SoapStringError`.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch


class SoapStringError(ValueError):
    """A QUIP ``soap`` descriptor string that is malformed or asks for something unsupported."""


#: xml_version from which QUIP divides the power spectrum by sqrt(2l+1)
_XML_TWO_L_PLUS_ONE = 1423143769
#: xml_version before which ``central_reference_all_species`` defaulted to T
_XML_CENTRAL_REF = 1426512068

#: keys that gap_fit writes into the descriptor string for the GP / sparsification, not SOAP
GAP_FIT_KEYS = frozenset((
    "add_species", "config_type_n_sparse", "covariance_type", "delta", "f0",
    "lengthscale_factor", "lengthscale_file", "lengthscale_uniform", "mark_sparse_atoms",
    "n_sparse", "print_sparse_index", "soap_exponent", "sparse_file", "sparse_method",
    "sparse_separate_file", "theta", "theta_fac", "theta_file", "theta_uniform",
    "unique_descriptor_tolerance", "unique_hash_tolerance", "zeta", "sparse_jitter",
    "signal_variance",
))

_TRUE = {"t", "true", ".true.", "1", "yes"}
_FALSE = {"f", "false", ".false.", "0", "no"}


def _tokenize(text: str) -> list[tuple[str, str | None]]:
    """``key=value`` pairs of a QUIP argument string (values may be ``{...}`` or quoted)."""
    pairs, pos = [], 0
    pattern = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=\s*(\{[^}]*\}|\"[^\"]*\"|'[^']*'|"
                         r"[^\s{}\"']+))?")
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = pattern.match(text, pos)
        if m is None or m.end() == pos:
            raise SoapStringError(f"cannot parse soap descriptor string near {text[pos:]!r}")
        value = m.group(3)
        if value is not None and value[0] in "{\"'":
            value = value[1:-1]
        pairs.append((m.group(1), value))
        pos = m.end()
    return pairs


def _bool(key, value):
    v = "t" if value is None else value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise SoapStringError(f"soap key {key}={value!r}: not a logical value")


def _ints(key, value):
    try:
        return [int(t) for t in value.replace(",", " ").split()]
    except (ValueError, AttributeError):
        raise SoapStringError(f"soap key {key}={value!r}: expected integers") from None


def _num(key, value, kind=float):
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise SoapStringError(f"soap key {key}={value!r}: expected {kind.__name__}") from None


def _basis(cutoff, sigma, n_max, error_exponent):
    """QUIP's EQUISPACED_GAUSS radial basis: centres ``r_a``, ``T = C^-1 L``, ``L``."""
    alpha = 0.5 / sigma ** 2
    cutoff_basis = cutoff + sigma * math.sqrt(2.0 * error_exponent * math.log(10.0))
    r = np.arange(n_max, dtype=np.float64) * (cutoff_basis / n_max)
    ri, rj = r[None, :], r[:, None]
    cov = np.exp(-alpha * (ri - rj) ** 2)
    erf = np.vectorize(math.erf)
    s = ri + rj
    overlap = (np.exp(-alpha * (ri ** 2 + rj ** 2)) * math.sqrt(2.0) * alpha ** 1.5 * s
               + alpha * np.exp(-0.5 * alpha * (ri - rj) ** 2) * math.sqrt(math.pi)
               * (1.0 + alpha * s ** 2) * (1.0 + erf(math.sqrt(alpha / 2.0) * s)))
    overlap /= math.sqrt(128.0 * alpha ** 5)
    chol = np.linalg.cholesky(overlap)
    transform = np.linalg.solve(cov, chol)
    return r, transform, chol


def _series_terms(x_max: float, tol: float = 1e-18) -> int:
    """Terms of the ``i_l`` power series needed for ``x <= x_max`` (worst case l = 0)."""
    t, k, h = 1.0, 0, 0.5 * x_max * x_max
    while t > tol or k < 4:
        k += 1
        t *= h / (k * (2 * k + 1))
    return k + 1


class QuipSoap(torch.nn.Module):
    """QUIP's ``soap`` descriptor; build it with :meth:`from_quip_string`.

    ``soap(Z, i, j, vectors)`` returns ``(desc, centres)``: ``desc`` of shape
    ``(n_centres, dimension)`` in QUIP's element order, ``centres`` the atom indices (in
    atom order) of the atoms whose atomic number is one of :attr:`Z` (all atoms if ``Z``
    holds 0). ``i, j`` is a full neighbour list (both directions, several structures may be
    concatenated with offset indices), ``vectors[e] = x_j - x_i + shift``; edges beyond the
    cutoff and neighbours whose species is not in ``species_Z`` are ignored.
    """

    def __init__(self, cutoff, n_max, l_max, atom_sigma, *, cutoff_transition_width=0.5,
                 central_weight=1.0, species_Z=(0,), Z=(0,), normalise=True,
                 central_reference_all_species=None, diagonal_radial=False,
                 covariance_sigma0=0.0, basis_error_exponent=10.0, cutoff_dexp=0,
                 cutoff_scale=1.0, cutoff_rate=1.0, xml_version=None):
        super().__init__()
        if cutoff <= 0 or n_max < 1 or l_max < 0 or atom_sigma <= 0:
            raise SoapStringError(f"soap: invalid cutoff={cutoff}, n_max={n_max}, "
                                  f"l_max={l_max} or atom_sigma={atom_sigma}")
        if not 0 < cutoff_transition_width <= cutoff:
            raise SoapStringError(f"soap: cutoff_transition_width={cutoff_transition_width} "
                                  f"must be in (0, cutoff]")
        if cutoff_dexp < 0 or cutoff_scale <= 0 or cutoff_rate < 0:
            raise SoapStringError("soap: need cutoff_dexp >= 0, cutoff_scale > 0, "
                                  "cutoff_rate >= 0")
        xml = _XML_CENTRAL_REF if xml_version is None else int(xml_version)
        self.cutoff = float(cutoff)
        self.cutoff_transition_width = float(cutoff_transition_width)
        self.n_max, self.l_max = int(n_max), int(l_max)
        self.atom_sigma = float(atom_sigma)
        self.alpha = 0.5 / self.atom_sigma ** 2
        self.central_weight = float(central_weight)
        self.species_Z = [int(z) for z in species_Z]
        self.Z = [int(z) for z in Z]
        self.normalise = bool(normalise)
        if central_reference_all_species is None:
            central_reference_all_species = len(self.species_Z) == 1
        self.central_reference_all_species = (bool(central_reference_all_species)
                                              or xml < _XML_CENTRAL_REF)
        self.diagonal_radial = bool(diagonal_radial)
        self.covariance_sigma0 = float(covariance_sigma0)
        self.cutoff_dexp, self.cutoff_scale = int(cutoff_dexp), float(cutoff_scale)
        self.cutoff_rate = float(cutoff_rate)
        self.two_l_plus_one = xml >= _XML_TWO_L_PLUS_ONE

        r_basis, transform, chol = _basis(self.cutoff, self.atom_sigma, self.n_max,
                                          float(basis_error_exponent))
        self.register_buffer("r_basis", torch.from_numpy(r_basis), persistent=False)
        self.register_buffer("transform", torch.from_numpy(transform), persistent=False)
        self.central_coefficient = float(chol[0, 0]) / math.sqrt(4.0 * math.pi)
        # below x_switch the i_l power series is used: the upward recursion loses about
        # l (l + 1) / (2 x) / ln(10) digits; this keeps that loss below ~1e-13
        self.x_switch = max(2.0, self.l_max * (self.l_max + 1) / 8.0)

        # species map: QUIP's loop order (a 0 entry maps every element to channel 1)
        self.n_species = len(self.species_Z)
        smap = np.full(120, -1, dtype=np.int64)
        for s, z in enumerate(self.species_Z):
            if z == 0:
                smap[:] = 0
            else:
                smap[z] = s
        self.register_buffer("species_map", torch.from_numpy(smap), persistent=False)
        # which (centre Z, channel) pairs carry the central Gaussian
        central = np.zeros((120, self.n_species))
        for s, z in enumerate(self.species_Z):
            if self.central_reference_all_species or z == 0:
                central[:, s] = 1.0
            else:
                central[z, s] = 1.0
        self.register_buffer("central_mask", torch.from_numpy(central), persistent=False)
        is_centre = np.zeros(120, dtype=bool)
        is_centre[[z for z in self.Z if z > 0]] = True
        if 0 in self.Z:
            is_centre[:] = True
        self.register_buffer("is_centre", torch.from_numpy(is_centre), persistent=False)

        # power-spectrum pairs K >= K' (QUIP order), sqrt(2) off the diagonal
        K = self.n_species * self.n_max
        pairs = [(a, b) for a in range(K) for b in range(a + 1)
                 if not self.diagonal_radial or a % self.n_max == b % self.n_max]
        pa = torch.tensor([p[0] for p in pairs], dtype=torch.long)
        pb = torch.tensor([p[1] for p in pairs], dtype=torch.long)
        self.register_buffer("pair_a", pa, persistent=False)
        self.register_buffer("pair_b", pb, persistent=False)
        fac = torch.tensor([1.0 if a == b else math.sqrt(2.0) for a, b in pairs],
                           dtype=torch.float64)
        self.register_buffer("pair_factor", fac, persistent=False)
        self.dimension = len(pairs) * (self.l_max + 1) + 1
        self._sh_cache: dict = {}

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_quip_string(cls, text: str, *, xml_version=None, ignore_keys=()):
        """Build from a QUIP descriptor string, e.g. the ``<descriptor>`` text of a GAP xml.

        GP/sparsification keys written by ``gap_fit`` (:data:`GAP_FIT_KEYS`) and
        ``ignore_keys`` are skipped; any other key this module does not implement, or an
        unsupported value, raises :class:`SoapStringError`. ``xml_version`` (the GAP_params
        attribute of the xml; a key of the same name in ``text`` wins) selects QUIP's
        backward-compatible defaults.
        """
        words = text.strip().split(None, 1)
        if not words or words[0].lower() != "soap":
            raise SoapStringError(f"not a soap descriptor string: {text[:60]!r}")
        pairs = _tokenize(words[1] if len(words) > 1 else "")
        seen: dict[str, str | None] = {}
        for key, value in pairs:
            k = key.lower()
            if k in seen:
                raise SoapStringError(f"soap key {key} given twice")
            seen[k] = value
        kw: dict = {}
        opts = dict(seen)
        for k in list(opts):
            if k in GAP_FIT_KEYS or k in {s.lower() for s in ignore_keys}:
                opts.pop(k)

        def take(key, conv, *alts):
            for name in (key,) + alts:
                name = name.lower()
                if name in opts:
                    value = opts.pop(name)
                    if value is None and conv is not _bool:
                        raise SoapStringError(f"soap key {name} needs a value")
                    return conv(name, value)
            return None

        for key in ("cutoff", "n_max", "l_max"):
            if key not in opts:
                raise SoapStringError(f"soap descriptor string lacks mandatory key {key}")
        kw["cutoff"] = take("cutoff", _num)
        kw["n_max"] = take("n_max", lambda k, v: _num(k, v, int))
        kw["l_max"] = take("l_max", lambda k, v: _num(k, v, int))
        sigma = take("atom_sigma", _num, "atom_gaussian_width")
        if sigma is None:
            raise SoapStringError("soap descriptor string lacks mandatory key atom_sigma")
        kw["atom_sigma"] = sigma
        for key in ("cutoff_transition_width", "central_weight", "covariance_sigma0",
                    "basis_error_exponent", "cutoff_scale", "cutoff_rate"):
            v = take(key, _num)
            if v is not None:
                kw[key] = v
        v = take("cutoff_dexp", lambda k, x: _num(k, x, int))
        if v is not None:
            kw["cutoff_dexp"] = v
        for key, alts in (("normalise", ("normalize",)), ("diagonal_radial", ()),
                          ("central_reference_all_species", ())):
            v = take(key, _bool, *alts)
            if v is not None:
                kw[key] = v
        v = take("xml_version", lambda k, x: _num(k, x, int))
        kw["xml_version"] = v if v is not None else xml_version

        n_species = take("n_species", lambda k, x: _num(k, x, int))
        species = take("species_Z", _ints)
        if species is not None and n_species is None:
            raise SoapStringError("soap: species_Z is given but n_species is not")
        n_species = 1 if n_species is None else n_species
        species = [0] if species is None else species
        if len(species) != n_species:
            raise SoapStringError(f"soap: n_species={n_species} but species_Z={species}")
        kw["species_Z"] = species
        n_Z = take("n_z", lambda k, x: _num(k, x, int))
        centre_Z = take("z", _ints)
        n_Z = 1 if n_Z is None else n_Z
        centre_Z = [0] if centre_Z is None else centre_Z
        if len(centre_Z) != n_Z:
            raise SoapStringError(f"soap: n_Z={n_Z} but Z={centre_Z}")
        kw["Z"] = centre_Z

        # options of QUIP's soap that are only supported at their defaults
        defaults = {"average": (_bool, False), "nu_r": (_num, 2.0), "nu_s": (_num, 2.0),
                    "z_mix": (_bool, False), "r_mix": (_bool, False),
                    "sym_mix": (_bool, False), "coupling": (_bool, True),
                    "k": (_num, 0.0), "mix_shift": (_num, None)}
        for key, (conv, ok) in defaults.items():
            v = take(key, conv)
            if v is not None and ok is not None and v != ok:
                raise SoapStringError(f"soap option {key}={seen[key]} is not supported "
                                      f"(only the QUIP default {ok})")
        for key in ("z_map",):
            v = opts.pop(key, None)
            if v:
                raise SoapStringError(f"soap option Z_map={v!r} is not supported")
        v = opts.pop("radial_basis", None)
        if v and v.upper() != "EQUISPACED_GAUSS":
            raise SoapStringError(f"soap radial_basis={v} is not supported "
                                  "(only EQUISPACED_GAUSS, the QUIP default)")
        if opts:
            raise SoapStringError(f"soap descriptor string has keys this implementation "
                                  f"does not know: {sorted(opts)}")
        return cls(**kw)

    # ------------------------------------------------------------------ pieces
    def cutoff_function(self, r):
        """QUIP's ``coordination_function`` times the optional ``cutoff_dexp`` decay."""
        rc, w = self.cutoff, self.cutoff_transition_width
        t = ((r - rc + w) / w).clamp(0.0, 1.0)
        fc = torch.where(r > rc - w, 0.5 * (torch.cos(math.pi * t) + 1.0),
                         torch.ones_like(r))
        fc = torch.where(r > rc, torch.zeros_like(r), fc)
        if self.cutoff_dexp > 0:
            q = (r / self.cutoff_scale) ** self.cutoff_dexp
            norm = 1.0 if self.cutoff_rate == 0 else self.cutoff_rate / (1 + self.cutoff_rate)
            fc = fc * norm * (1.0 + self.cutoff_rate) / (self.cutoff_rate + q)
        return fc

    def radial(self, r):
        """``g_la(r) = exp(-alpha (r^2 + r_a^2)) i_l(2 alpha r r_a)``, shape ``(E, L+1, A)``."""
        alpha, ra = self.alpha, self.r_basis.to(r.dtype)
        rr = r[:, None]
        x = 2.0 * alpha * rr * ra                                    # (E, A)
        large = x >= self.x_switch
        # upward recursion from sinh(x)/x, cosh(x)/x (accurate for large x)
        inv = 1.0 / torch.where(large, x, torch.full_like(x, self.x_switch))
        ep = torch.exp(-alpha * (rr + ra) ** 2)
        em = torch.exp(-alpha * (rr - ra) ** 2)
        prev = 0.5 * (em + ep) * inv            # "i_{-1}"
        cur = 0.5 * (em - ep) * inv             # i_0
        rec = [cur]
        for l in range(1, self.l_max + 1):
            prev, cur = cur, prev - (2 * l - 1) * cur * inv
            rec.append(cur)
        rec = torch.stack(rec, 1)                                    # (E, L+1, A)
        small = torch.nonzero(~large.reshape(-1)).squeeze(1)
        if small.numel():
            # power series on the few small arguments only:
            # i_l(x) = x^l/(2l+1)!! sum_k (x^2/2)^k / (k! (2l+3)...(2l+2k+1))
            E, A = x.shape
            e_idx = torch.div(small, A, rounding_mode="floor")
            a_idx = small % A
            rs = r.index_select(0, e_idx)
            ras = ra.index_select(0, a_idx)
            xs = x.reshape(-1).index_select(0, small)[:, None]       # (M, 1)
            h = 0.5 * xs * xs
            n_terms = _series_terms(float(xs.detach().max()))
            kk = torch.arange(1, n_terms + 1, dtype=r.dtype, device=r.device)[:, None]
            ll = torch.arange(self.l_max + 1, dtype=r.dtype, device=r.device)[None, :]
            inv = 1.0 / (kk * (2 * ll + 2 * kk + 1))                  # (K, L+1)
            term = torch.ones(xs.shape[0], self.l_max + 1, dtype=r.dtype, device=r.device)
            total = term
            for k in range(n_terms):
                term = term * h * inv[k]
                total = total + term
            lead = [torch.ones_like(xs[:, 0])]
            for l in range(1, self.l_max + 1):
                lead.append(lead[-1] * xs[:, 0] / (2 * l + 1))
            e0 = torch.exp(-alpha * (rs * rs + ras * ras))
            ser = e0[:, None] * torch.stack(lead, 1) * total
            l_idx = torch.arange(self.l_max + 1, device=r.device)
            rec = rec.index_put((e_idx[:, None], l_idx[None, :], a_idx[:, None]), ser)
        return rec

    def spherical_harmonics(self, u):
        """Real orthonormal ``Y_lm`` of unit vectors ``u``, shape ``(E, (L+1)^2)``,
        ordered ``l = 0..L``, ``m = -l..l`` (sin-type for ``m < 0``)."""
        x, y, z = u[:, 0:1], u[:, 1:2], u[:, 2:3]
        L = self.l_max
        cos_m, sin_m = [torch.ones_like(x)], [torch.zeros_like(x)]
        for _ in range(L):   # cos_m + i sin_m = (x + i y)^m
            c, s = cos_m[-1], sin_m[-1]
            cos_m.append(c * x - s * y)
            sin_m.append(c * y + s * x)
        # columns m = -L..L: sin_|m| for m < 0, 1 for m = 0, cos_m for m > 0
        trig = torch.cat(sin_m[:0:-1] + cos_m, 1)
        # Q_l[:, m] = P_l^m(z) / sin^m(theta) for m = 0..L, by the recursion in l (all m
        # at once; entries with m > l are never used)
        lm, mm = self._sh_tables(u.dtype, u.device)
        rec = lm[:, :4, :L + 1]
        out, q2, q1 = [], None, None
        for l in range(L + 1):
            if l == 0:
                q = torch.ones_like(z).expand(-1, L + 1)
            else:
                q = (2 * l - 1) * z * q1 * rec[l, 0]
                if q2 is not None:
                    q = q - rec[l, 1] * q2
                q = q * rec[l, 2] + rec[l, 3]
            out.append(q.index_select(1, mm[l]) * trig[:, L - l:L + l + 1] * lm[l, 4, :2 * l + 1])
            q2, q1 = q1, q
        return torch.cat(out, 1)

    def _sh_tables(self, dtype, device):
        key = (dtype, str(device))
        if key not in self._sh_cache:
            self._sh_cache[key] = self._make_sh_tables(dtype, device)
        return self._sh_cache[key]

    def _make_sh_tables(self, dtype, device):
        """Coefficients of :meth:`spherical_harmonics`, per ``l`` (rows ``0..4``):
        scale of ``z Q_{l-1}``, coefficient of ``Q_{l-2}``, ``1/(l - m)``, the diagonal
        ``(2l-1)!!`` and the normalisation of ``m = -l..l``; ``mm[l] = |m|``."""
        L = self.l_max
        W = max(L + 1, 2 * L + 1)
        t = np.zeros((L + 1, 5, W))
        mm = []
        for l in range(L + 1):
            for m in range(L + 1):
                if m < l - 1:
                    t[l, 0, m], t[l, 1, m], t[l, 2, m] = 1.0, l + m - 1, 1.0 / (l - m)
                elif m == l - 1:          # Q_l^{l-1} = (2l - 1) z Q_{l-1}^{l-1}
                    t[l, 0, m], t[l, 2, m] = 1.0, 1.0
                elif m == l:              # Q_l^l = (2l - 1)!!
                    t[l, 3, m] = float(np.prod(np.arange(1, 2 * l, 2)))
            for k, m in enumerate(range(-l, l + 1)):
                a = abs(m)
                n = math.sqrt((2 * l + 1) / (4 * math.pi)
                              * math.factorial(l - a) / math.factorial(l + a))
                t[l, 4, k] = n if m == 0 else math.sqrt(2.0) * n
            mm.append(torch.tensor([abs(m) for m in range(-l, l + 1)], device=device))
        return torch.tensor(t, dtype=dtype, device=device), mm

    # ------------------------------------------------------------------ forward
    def forward(self, Z, i, j, vectors):
        """``(desc, centres)`` for all atoms of a (batched) neighbour list; see the class."""
        device, dtype = vectors.device, vectors.dtype
        Z = Z.to(device=device, dtype=torch.long)
        if Z.numel() and (int(Z.min()) < 0 or int(Z.max()) >= 120):
            raise ValueError("QuipSoap: atomic numbers must be in 0..119")
        centre_mask = self.is_centre[Z]
        centres = torch.nonzero(centre_mask).squeeze(1)
        row_of_atom = torch.cumsum(centre_mask.long(), 0) - 1
        nc, S, N, L = centres.shape[0], self.n_species, self.n_max, self.l_max

        r2 = (vectors * vectors).sum(1)
        sj = self.species_map[Z[j]]
        keep = (r2 < self.cutoff ** 2) & (r2 > 0) & centre_mask[i] & (sj >= 0)
        idx = torch.nonzero(keep).squeeze(1)
        # group the kept edges by centre: (centre row, neighbour slot) is a dense layout
        # in which the density is one small batched matmul per l, X_l[c] = Y_l[c]^T C_l[c]
        rows = row_of_atom[i.index_select(0, idx)]
        order = torch.argsort(rows, stable=True)
        idx, rows = idx.index_select(0, order), rows.index_select(0, order)
        counts = torch.bincount(rows, minlength=nc)
        M = int(counts.max()) if rows.numel() else 0
        slot = (torch.arange(rows.shape[0], device=device)
                - (torch.cumsum(counts, 0) - counts).index_select(0, rows))
        species = sj.index_select(0, idx)

        v = vectors.index_select(0, idx)
        r = torch.sqrt((v * v).sum(1))
        g = self.radial(r)                                           # (E, L+1, A)
        E = g.shape[0]
        coef = (g.reshape(E * (L + 1), N) @ self.transform.to(dtype)).view(E, L + 1, N)
        coef = coef * self.cutoff_function(r)[:, None, None]
        ylm = self.spherical_harmonics(v / r[:, None])               # (E, (L+1)^2)
        # central Gaussian: n = 1, l = 0 on the qualifying channels
        cw = (self.central_weight * self.central_coefficient
              * self.central_mask[Z[centres]].to(dtype))             # (nc, S)
        central = torch.zeros(nc, 1, S, N, dtype=dtype, device=device)
        central[:, 0, :, 0] = cw
        central = central.reshape(nc, 1, S * N)

        # scatter into the padded layout once (index_copy of whole rows), split per l
        lin = rows * M + slot
        Ypad = ylm.new_zeros(nc * M, (L + 1) ** 2).index_copy(0, lin, ylm)
        ylm_l = torch.split(Ypad.view(nc, M, (L + 1) ** 2), [2 * l + 1 for l in range(L + 1)], 2)
        Cpad = coef.new_zeros(L + 1, nc * M * S, N).index_copy(1, lin * S + species,
                                                                coef.transpose(0, 1))
        coef_l = torch.unbind(Cpad.view(L + 1, nc, M, S * N), 0)
        parts = []
        for l in range(L + 1):
            xl = torch.bmm(ylm_l[l].transpose(1, 2), coef_l[l])     # (nc, 2l+1, K)
            if l == 0:
                xl = xl + central
            p = torch.bmm(xl.transpose(1, 2), xl)
            if self.two_l_plus_one:
                p = p / math.sqrt(2 * l + 1)
            parts.append(p[:, self.pair_a, self.pair_b] * self.pair_factor.to(dtype))
        desc = torch.stack(parts, 2)
        # no centre of this descriptor's element in the batch: an empty (0, D) block
        desc = desc.reshape(nc, -1) if nc else desc.new_zeros((0, self.dimension - 1))
        if self.normalise:
            norm = torch.linalg.vector_norm(desc, dim=1, keepdim=True)
            desc = desc / torch.where(norm > 0, norm, torch.ones_like(norm))
        sigma0 = torch.full((nc, 1), self.covariance_sigma0, dtype=dtype, device=device)
        return torch.cat([desc, sigma0], 1), centres

    def extra_repr(self):
        return (f"cutoff={self.cutoff}, n_max={self.n_max}, l_max={self.l_max}, "
                f"atom_sigma={self.atom_sigma}, species_Z={self.species_Z}, Z={self.Z}, "
                f"dimension={self.dimension}")
