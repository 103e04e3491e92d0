"""``fpe theory plot``: coverage against width and the collision ratio against alpha.

Paper: Sec. A.5 (curves), Sec. 3.1 / 3.2 / A.6 (the paper's settings marked on them).

Figures (PNG, Agg backend) written to ``out_dir``:

``coverage_vs_r.png``
    ``P[all C clauses covered]`` against the dense width ``r`` for six settings: exact under
    model (a) and model (b), the paper's union bound with the exact ``p`` and its
    approximation ``1 - C exp(-r / alpha^(k-1))`` (both clipped at 0 where vacuous),
    simulations of (a) and (b) with 99.9% Clopper-Pearson bars, the paper's width ``r = 8``
    and its requirement ``r_req = alpha^(k-1) ln(C / 0.01)``.
``collision_ratio_vs_alpha.png``
    ``E_FPE / E_dense`` against ``alpha`` (log-log) for k = 2, 3, 4: exact ``alpha p'`` at
    ``m = 96`` and at ``m = 9600``, the approximation ``alpha^-(2k-1)``, and simulations of (a)
    and (b) at ``m = 96`` with 99.9% CLT bars (where enough collisions are expected).
``paper_settings.png``
    Exact coverage under (a) and (b) at the paper's own Boolean settings (Fig. 3a, Fig. 3b,
    Table A1), the Sec. 3.1 case study marked.

``plot_data.json`` holds every plotted number. Every figure names each of its marks in a
legend and says in a footnote what its error bars are and how the points were made.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from fpe_ref.errors import FPEError  # noqa: E402
from fpe_ref.rng import stream  # noqa: E402

from fpe_ref.theory import closed_form as cf  # noqa: E402
from fpe_ref.theory import monte_carlo as mc  # noqa: E402

#: (m, k, alpha, r values simulated) per coverage panel.
COVERAGE_PANELS = [
    (32, 4, 2, (8, 16, 25, 40, 54, 65)),  # Sec. 3.1 case study family
    (32, 4, 4, (8, 100, 200, 320, 428, 700)),  # Fig. 3a at alpha = 4
    (128, 4, 2, (8, 20, 32, 45, 65)),  # Fig. 3b / Table A1 largest m
    (64, 2, 4, (4, 8, 16, 24, 33)),
    (96, 3, 4, (20, 45, 68, 100, 130)),
    (24, 3, 8, (100, 250, 428, 630, 1000)),
]
RATIO_M = (96, 9600)
RATIO_ALPHAS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48)
SIM_ALPHAS = (2, 3, 4, 6, 8)


def _sim_job(args):
    model, m, k, alpha, r, n, seed = args
    rng = stream(seed, "theory-plot", model, m, k, alpha, r, n)
    fn = mc.simulate_independent if model == "a" else mc.simulate_split
    res = fn(m, k, alpha, r, n, rng)
    return dict(model=model, m=m, k=k, alpha=alpha, r=r, n=res.n_networks, covered=int(res.all_covered.sum()),
                coll=res.collisions)


def _run(jobs_list, jobs):
    if jobs == 1:
        return [_sim_job(j) for j in jobs_list]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(_sim_job, jobs_list, chunksize=1))


def coverage_data(seed: int, jobs: int, *, quick: bool = False) -> list[dict]:
    """Curves and simulated points for ``coverage_vs_r.png``."""
    panels = COVERAGE_PANELS[:2] if quick else COVERAGE_PANELS
    tasks = []
    for m, k, alpha, rs in panels:
        for r in rs[:2] if quick else rs:
            n_a = int(min(4000, max(200, 1.5e6 / (alpha * r))))
            n_b = int(min(1500, max(40, (2e4 if quick else 4e4) / r)))
            if quick:
                n_a, n_b = min(n_a, 300), min(n_b, 30)
            tasks += [("a", m, k, alpha, r, n_a, seed), ("b", m, k, alpha, r, n_b, seed)]
    tasks.sort(key=lambda t: -(20 if t[0] == "b" else 1) * t[4] * t[5] * t[3])
    sims = _run(tasks, jobs)
    out = []
    for m, k, alpha, rs in panels:
        C = m // k
        r_req = cf.width_requirement(k, alpha, C, 0.01)
        r_max = max(max(rs), math.ceil(1.3 * r_req))
        grid = np.unique(np.linspace(1, r_max, 120).astype(int))
        pts = []
        for s in sims:
            if (s["m"], s["k"], s["alpha"]) == (m, k, alpha):
                e = mc.proportion_interval(s["covered"], s["n"], 0.999)
                pts.append(dict(model=s["model"], r=s["r"], n=s["n"], estimate=e.value, lo=e.lo, hi=e.hi))
        out.append(
            dict(
                m=m, k=k, alpha=alpha, C=C, d=m // alpha, r_req=r_req,
                r=grid.tolist(),
                exact_a=[cf.coverage_exact(m, k, alpha, int(r)) for r in grid],
                exact_b=[cf.coverage_exact_split(m, k, alpha, int(r)) for r in grid],
                union_bound=[cf.union_bound(m, k, alpha, int(r)) for r in grid],
                approx=[cf.union_bound_approx(k, alpha, int(r), C) for r in grid],
                sims=sorted(pts, key=lambda p: (p["model"], p["r"])),
            )
        )
    return out


def ratio_data(seed: int, jobs: int, *, quick: bool = False) -> list[dict]:
    """Curves and simulated points for ``collision_ratio_vs_alpha.png``."""
    out = []
    tasks = []
    m_sim = RATIO_M[0]
    r_sim = 8
    alphas_sim = SIM_ALPHAS[:2] if quick else SIM_ALPHAS
    for k in (2, 3, 4):
        for alpha in alphas_sim:
            ratio = cf.collision_ratio(m_sim, k, alpha)
            e_dense = cf.expected_collisions_dense(m_sim // k, r_sim)
            # enough networks for >= 400 expected collisions, within a budget
            need = 400 / max(ratio * e_dense, 1e-300)
            n_a = int(min(200_000 if not quick else 1000, max(200, need)))
            n_b = int(min(4000 if not quick else 50, max(100 if not quick else 20, need)))
            tasks += [("a", m_sim, k, alpha, r_sim, n_a, seed), ("b", m_sim, k, alpha, r_sim, n_b, seed)]
    tasks.sort(key=lambda t: -(20 if t[0] == "b" else 1) * t[4] * t[5] * t[3])
    sims = _run(tasks, jobs)
    for k in (2, 3, 4):
        curves = {}
        for m in RATIO_M:
            al = [a for a in RATIO_ALPHAS if m // a >= 2 * k]
            curves[str(m)] = dict(alpha=al, exact=[cf.collision_ratio(m, k, a) for a in al])
        al = list(RATIO_ALPHAS)
        pts = []
        e_dense = cf.expected_collisions_dense(m_sim // k, r_sim)
        for s in sims:
            if s["k"] != k:
                continue
            expected = cf.collision_ratio(m_sim, k, s["alpha"]) * e_dense * s["n"]
            e = mc.mean_interval(s["coll"], 0.999, scale=1.0 / e_dense)
            pts.append(dict(model=s["model"], alpha=s["alpha"], n=s["n"], estimate=e.value, lo=e.lo, hi=e.hi,
                            expected_events=expected, testable=expected >= 100))
        out.append(dict(k=k, curves=curves, approx_alpha=al, approx=[cf.collision_ratio_approx(k, a) for a in al],
                        m_sim=m_sim, r_sim=r_sim, sims=sorted(pts, key=lambda p: (p["model"], p["alpha"]))))
    return out


def paper_data() -> dict:
    """Exact coverage (a) / (b) at the paper's settings (see ``fpe_ref.theory.check.paper_settings``)."""
    fig3a = {a: dict(r=list(range(4, 17)), a=[cf.coverage_exact(32, 4, a, r) for r in range(4, 17)],
                     b=[cf.coverage_exact_split(32, 4, a, r) for r in range(4, 17)]) for a in (2, 4)}
    Cs = list(range(4, 33, 4))
    fig3b = {a: dict(C=Cs, a=[cf.coverage_exact(4 * C, 4, a, 8) for C in Cs],
                     b=[cf.coverage_exact_split(4 * C, 4, a, 8) for C in Cs]) for a in (2, 4)}
    ms = [12, 24, 32, 40, 60, 80, 100, 128]
    ta1 = {a: dict(m=ms, a=[cf.coverage_exact(m, 4, a, 8) for m in ms], b=[cf.coverage_exact_split(m, 4, a, 8) for m in ms]) for a in (2, 4)}
    return dict(fig3a=fig3a, fig3b=fig3b, table_a1=ta1)


# ----------------------------------------------------------------------------- drawing

_A = dict(color="C0")
_B = dict(color="C3")


def draw_coverage(data: list[dict], path: str) -> None:
    n = len(data)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    for ax, p in zip(axes.flat, data):
        r = np.asarray(p["r"])
        ax.plot(r, p["exact_a"], lw=2, label="exact, model (a): independent neurons", **_A)
        ax.plot(r, p["exact_b"], lw=2, ls="--", label="exact, model (b): fpe_ref random split", **_B)
        ax.plot(r, np.clip(p["union_bound"], 0, 1), color="k", lw=1.2, label=r"union bound $1-C(1-p)^{\alpha r}$")
        ax.plot(r, np.clip(p["approx"], 0, 1), color="0.5", lw=1.2, ls=":", label=r"approx. $1-C\,e^{-r/\alpha^{k-1}}$")
        for model, sty, mk in (("a", _A, "o"), ("b", _B, "s")):
            pts = [s for s in p["sims"] if s["model"] == model]
            if pts:
                x = np.array([s["r"] for s in pts], dtype=float) * (1.0 if model == "a" else 1.02)
                y = np.array([s["estimate"] for s in pts])
                err = np.array([[s["estimate"] - s["lo"] for s in pts], [s["hi"] - s["estimate"] for s in pts]])
                ax.errorbar(x, y, yerr=err, fmt=mk, ms=4, capsize=2, mfc="white", label=f"simulated ({model}), 99.9% CI", **sty)
        ax.axvline(8, color="g", lw=0.8, ls="-.")
        ax.axvline(p["r_req"], color="m", lw=0.8, ls="-.")
        ax.text(8, 1.02, " r=8", color="g", fontsize=7, va="bottom")
        ax.text(p["r_req"], 1.02, r" $r_{req}$", color="m", fontsize=7, va="bottom")
        ax.set_ylim(-0.02, 1.08)
        ax.set_xlim(0, r.max())
        ax.set_xlabel("dense width r (parents); FPE has alpha*r neurons")
        ax.set_ylabel("P[all C clauses covered]")
        ax.set_title(f"m={p['m']}, k={p['k']}, alpha={p['alpha']} (C={p['C']}, d={p['d']})", fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes.flat[n:]:
        ax.axis("off")
    h, lab = axes.flat[0].get_legend_handles_labels()
    h += [Line2D([], [], color="g", lw=0.8, ls="-."), Line2D([], [], color="m", lw=0.8, ls="-.")]
    lab += ["r = 8: the paper's width (Sec. 3.1, Fig. 3b)", r"$r_{req}$: width for P[all covered] $\geq$ 0.99"]
    fig.legend(h, lab, loc="lower center", ncol=4, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.035))
    fig.text(0.01, 0.005, "Simulated points: the share of simulated networks with every clause covered (networks "
             "per point: plot_data.json); error bars: 99.9% Clopper-Pearson intervals; model (b) drawn 2% to the "
             "right so the bars do not hide each other. Bound and approximation clipped at 0 where vacuous.",
             fontsize=7.5, color="0.25", va="bottom")
    fig.suptitle("Clause coverage (Sec. A.5): exact vs union bound vs approximation vs simulation; "
                 r"$r_{req}=\alpha^{k-1}\ln(C/0.01)$", fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 0.96))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def draw_ratio(data: list[dict], path: str) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for i, p in enumerate(data):
        col = f"C{i}"
        k = p["k"]
        ax.plot(p["approx_alpha"], p["approx"], color=col, ls=":", lw=1.2, label=rf"k={k}: approx. $\alpha^{{-(2k-1)}}$")
        for m, ls in zip(sorted(p["curves"], key=int), ("-", "--")):
            c = p["curves"][m]
            ax.plot(c["alpha"], c["exact"], color=col, ls=ls, lw=1.8, label=rf"k={k}: exact $\alpha p'$, m={m}")
        for model, mk in (("a", "o"), ("b", "s")):
            pts = [s for s in p["sims"] if s["model"] == model and s["testable"]]
            if pts:
                x = np.array([s["alpha"] for s in pts], dtype=float) * (1.0 if model == "a" else 1.04)
                y = np.array([s["estimate"] for s in pts])
                lo = np.maximum(np.array([s["lo"] for s in pts]), y * 1e-3)
                err = np.array([y - lo, np.array([s["hi"] for s in pts]) - y])
                ax.errorbar(x, y, yerr=err, fmt=mk, color=col, ms=5, mfc="white", capsize=2,
                            label=f"k={k}: simulated ({model}), m={p['m_sim']}, 99.9% CI")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(r"expansion factor $\alpha$ (degree $d = m/\alpha$, balanced when $\alpha \nmid m$)")
    ax.set_ylabel(r"collision ratio $E_{FPE}/E_{dense} = \alpha p'$")
    ax.set_title("Collision ratio (Sec. A.5): exact vs approximation vs simulation\n"
                 "(a) independent neurons, (b) fpe_ref random split: same expectation", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, ncol=2, loc="lower left")
    fig.text(0.01, 0.005, "Simulated points: mean collisions per network over n networks, over the dense "
             "expectation; error bars: 99.9% normal (CLT) intervals;\nonly settings with at least 100 expected "
             "collisions are drawn; model (b) drawn 4% to the right. Exact curves end where m/alpha < 2k.",
             fontsize=7, color="0.25", va="bottom")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def draw_paper(data: dict, path: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    panels = [
        ("fig3a", "r", "hidden width r (C=8 clauses, m=32)", "Fig. 3a: 8 clauses, r = 4..16"),
        ("fig3b", "C", "clauses C (m=4C, r=8)", "Fig. 3b: r = 8, C = 4..32"),
        ("table_a1", "m", "literals m (C=m/4, r=8)", "Table A1: r = 8 (alpha not stated)"),
    ]
    for ax, (key, xk, xl, title) in zip(axes, panels):
        for alpha, mk in ((2, "o"), (4, "^")):
            d = data[key][alpha] if alpha in data[key] else data[key][str(alpha)]
            for model, sty, fill in (("a", _A, None), ("b", _B, "white")):
                y = np.array(d[model], dtype=float)
                zero = y <= 0
                y[zero] = np.nan  # exactly 0: no child can hold a clause (d < k)
                ax.plot(d[xk], y, marker=mk, label=f"alpha={alpha}, model ({model})", **sty, ls="-" if alpha == 2 else "--",
                        mfc=fill or sty["color"])
                for x in np.asarray(d[xk])[zero]:
                    ax.annotate(f"alpha={alpha}: exactly 0\n(d={x // alpha} < k=4)", xy=(x, 1e-36), xytext=(x + 4, 1e-30),
                                fontsize=7, arrowprops=dict(arrowstyle="->", lw=0.6)) if model == "a" else None
        ax.axhline(0.99, color="k", lw=0.6, ls=":", label="P = 0.99")
        ax.set_yscale("log")
        ax.set_ylim(1e-36, 5)
        ax.set_yticks([1e-35, 1e-30, 1e-25, 1e-20, 1e-15, 1e-10, 1e-5, 1])
        ax.set_xlabel(xl)
        ax.set_ylabel("exact P[all clauses covered]")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        if key == "fig3a":
            ax.annotate("Sec. 3.1 case study\n(r=8, alpha=2)", xy=(8, cf.coverage_exact(32, 4, 2, 8)), xytext=(9.5, 1e-20),
                        arrowprops=dict(arrowstyle="->"), fontsize=8)
    axes[0].legend(fontsize=8)
    fig.suptitle("Where the paper's Boolean experiments sit: exact P[every clause covered by one neuron] (log scale; dotted: 0.99)", fontsize=11)
    fig.text(0.01, 0.005, "Exact probabilities (no simulation). Model (a): every FPE neuron draws its inputs "
             "independently; model (b): fpe_ref's random split of r parents. A point left out is exactly 0 "
             "(a child has d = m/alpha < k inputs), as annotated.", fontsize=7.5, color="0.25", va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def run_plot(out_dir: str, *, seed: int = 0, jobs: int = 2, quick: bool = False, echo=print) -> list[str]:
    """Compute every curve, draw the three figures, write ``plot_data.json``; return the paths."""
    if jobs < 1:
        raise FPEError(f"jobs must be >= 1, got {jobs}")
    os.makedirs(out_dir, exist_ok=True)
    echo("coverage curves and simulations ...")
    cov = coverage_data(seed, jobs, quick=quick)
    echo("collision ratios and simulations ...")
    rat = ratio_data(seed, jobs, quick=quick)
    pap = paper_data()
    paths = [os.path.join(out_dir, f) for f in ("coverage_vs_r.png", "collision_ratio_vs_alpha.png", "paper_settings.png")]
    draw_coverage(cov, paths[0])
    draw_ratio(rat, paths[1])
    draw_paper(pap, paths[2])

    def clean(x):
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, np.ndarray):
            return None  # raw per-network counts are not kept
        if isinstance(x, (np.integer,)):
            return int(x)
        if isinstance(x, (float, np.floating)):
            return None if not math.isfinite(float(x)) else float(x)
        return x

    for p in rat:
        for s in p["sims"]:
            s.pop("coll", None)
    data_path = os.path.join(out_dir, "plot_data.json")
    with open(data_path, "w") as fh:
        json.dump(clean(dict(format_version=1, seed=seed, quick=quick, coverage=cov, ratio=rat, paper=pap)), fh, indent=1)
        fh.write("\n")
    return paths + [data_path]
