"""The figure gallery: ``outputs/<profile>/index.html``, one card per figure, beside ``index.md``.

``figure_index.render_index`` calls ``write_gallery`` with the same state it renders as ``index.md``
(execution name -> result with its ``figures`` records, ``report.save_figure``). Each card shows the
figure (``figures/<name>.png``), its caption, its claims (a claim that does not hold is red and counted
in the card's title), its numbers, parameter values, params file, run ids, git SHA, package versions and
time, and links to the executed notebook and the token views of its execution. A figure whose parameters
are not its profile's (``placement``: kept under ``scratch/``) is marked so. Above the cards, a table of
the executions (status, seconds, the error and the cell it came from) and a list of links to every card.
Every link of the page is a relative path (``relative_href``).

The page is one file with its CSS inline: no script, no font or stylesheet from the network; it opens
from the disk in any browser and reads on a laptop screen (cards in one or two columns).
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import quote

MAX_OPEN_NUMBERS = 12  # a card lists up to this many numbers open; more sit in a closed <details>
SHOWN_RUN_IDS = 5

CSS = """
:root { --fail: #b42318; --fail-bg: #fdecea; --ok: #067647; --muted: #555; --line: #d0d5dd; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1600px; padding: 1rem 1.5rem 3rem; color: #1d2939; background: #f7f7f8;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; }
h1 { font-size: 1.5rem; margin: .3rem 0; }
h2 { font-size: 1.1rem; margin: 0 0 .5rem; overflow-wrap: anywhere; }
code { font: .9em/1.3 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
a { color: #175cd3; }
.meta, .muted { color: var(--muted); }
.summary { font-size: 1.05rem; }
.fail { color: var(--fail); font-weight: 600; }
.ok { color: var(--ok); }
nav { display: flex; flex-wrap: wrap; gap: .3rem .9rem; margin: .6rem 0 1rem; font-size: .9rem; }
nav a.fail { color: var(--fail); }
table { border-collapse: collapse; font-size: .88rem; }
th, td { text-align: left; padding: .15rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
table.runs { width: 100%; margin-bottom: 1.2rem; background: #fff; }
tr.failed td { background: var(--fail-bg); }
.cards { display: grid; align-items: start; grid-template-columns: repeat(auto-fill, minmax(min(100%, 560px), 1fr)); gap: 1.1rem; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: .9rem 1rem;
        min-width: 0; }
.card.failing { border: 2px solid var(--fail); }
.card img { display: block; max-width: 100%; height: auto; margin: .2rem auto .6rem; }
.caption { margin: .2rem 0 .6rem; }
.badge { display: inline-block; font-size: .8rem; font-weight: 600; padding: .05rem .45rem; border-radius: 999px;
         margin-left: .4rem; vertical-align: middle; }
.badge.ok { background: #ecfdf3; }
.badge.fail { background: var(--fail-bg); }
.badge.scratch { background: #fef0c7; color: #93370d; }
.card.scratch { border: 2px dashed #dc6803; }
.scratch-note { background: #fffaeb; color: #93370d; padding: .3rem .5rem; border-radius: 4px; font-size: .9rem; }
table.claims tr.claim-fail td { background: var(--fail-bg); color: var(--fail); font-weight: 600; }
details { margin: .4rem 0; }
summary { cursor: pointer; color: var(--muted); }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .7rem; margin: .6rem 0 0;
          font-size: .85rem; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
"""


SCRATCH = "scratch"  # placement.SCRATCH: the folder of the executions that are not the profile's


def relative_href(rel: str) -> str | None:
    """``rel`` as the ``href`` of a link: a relative path, percent-encoded (so never a ``javascript:`` or
    other URL, nor an absolute path), or ``None`` when it is not one."""
    rel = str(rel or "")
    if not rel or rel.startswith(("/", "~")) or "\\" in rel or re.search(r"[\x00-\x1f\x7f]", rel):
        return None
    return quote(rel, safe="/=,+-._~@")


def figure_path(out_dir: Path, fig: dict) -> str:
    """The PNG of a figure record relative to ``out_dir``: ``figures/<name>.png``, or under ``scratch/``
    for a record of parameters that are not the profile's (its ``folder``)."""
    folder = str(fig.get("folder") or "figures")
    if Path(out_dir).name == SCRATCH:
        folder = folder[len(SCRATCH) + 1:] if folder.startswith(SCRATCH + "/") else f"../{folder}"
    return f"{folder}/{fig.get('name', '?')}.png"


def not_profile(fig: dict) -> bool:
    """Whether a figure record says its parameters are not its profile's."""
    return fig.get("matches_profile") is False


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _bounds(c: dict) -> str:
    return " and ".join(f"{op} {c[k]:g}" for op, k in (("≥", "at_least"), ("≤", "at_most")) if c.get(k) is not None)


def claim_verdict(c: dict) -> str:
    """``ok``, ``FAIL`` (a bound that does not hold) or ``observed`` (no bound) for a claim record."""
    if not _bounds(c):
        return "observed"
    return "ok" if c.get("holds") else "FAIL"


def _claim_rows(claims: list[dict]) -> str:
    rows = []
    for c in claims:
        verdict = claim_verdict(c)
        cls = {"FAIL": "claim-fail", "ok": "claim-ok"}.get(verdict, "claim-observed")
        rows.append(f'<tr class="{cls}"><td>{verdict}</td><td>{_e(c.get("name"))}</td>'
                    f'<td><code>{_e(c.get("shown", c.get("value")))}</code></td><td>{_e(_bounds(c))}</td></tr>')
    return "".join(rows)


def _claims_table(claims: list[dict]) -> str:
    """The claims with a bound (failing ones first, in red), then the observations (folded when many)."""
    bounded = [c for c in claims if claim_verdict(c) != "observed"]
    bounded.sort(key=lambda c: claim_verdict(c) != "FAIL")
    observed = [c for c in claims if claim_verdict(c) == "observed"]
    out = ""
    if bounded:
        out += ('<table class="claims"><thead><tr><th></th><th>claim</th><th>value</th><th>bound</th></tr></thead>'
                f"<tbody>{_claim_rows(bounded)}</tbody></table>")
    if observed:
        opened = " open" if len(observed) <= MAX_OPEN_NUMBERS else ""
        out += (f'<details class="observed"{opened}><summary>observed, no bound ({len(observed)})</summary>'
                f'<table class="claims"><tbody>{_claim_rows(observed)}</tbody></table></details>')
    return out


def _numbers(numbers: dict) -> str:
    if not numbers:
        return ""
    rows = "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(v)}</code></td></tr>" for k, v in numbers.items())
    opened = " open" if len(numbers) <= MAX_OPEN_NUMBERS else ""
    return (f"<details class=\"numbers\"{opened}><summary>numbers ({len(numbers)})</summary>"
            f"<table><tbody>{rows}</tbody></table></details>")


def _link_if(out_dir: Path, rel: str, text: str) -> str:
    """A link to ``rel`` (relative to ``out_dir``) when it is a relative path to a file that exists, else
    the plain text."""
    href = relative_href(rel)
    if href and (out_dir / rel).is_file():
        return f'<a href="{_e(href)}">{_e(text)}</a>'
    return f'<span class="muted">{_e(text)} (not written)</span>'


def _token_view_links(out_dir: Path, views: list[str]) -> str:
    return ", ".join(_link_if(out_dir, f"figures/{v}.html", v) for v in views) or "-"


def _card(fig: dict, result: dict, out_dir: Path, card_id: str) -> str:
    name = fig.get("name", "?")
    claims = fig.get("claims") or []
    bounded = [c for c in claims if claim_verdict(c) != "observed"]
    failing = [c for c in bounded if claim_verdict(c) == "FAIL"]
    if failing:
        badge = f'<span class="badge fail">{len(failing)} of {len(bounded)} claims FAIL</span>'
    elif bounded:
        badge = f'<span class="badge ok">{len(bounded)} of {len(bounded)} claims hold</span>'
    else:
        badge = ""
    run_ids = list(fig.get("run_ids") or [])
    runs = ", ".join(f"<code>{_e(r)}</code>" for r in run_ids[:SHOWN_RUN_IDS]) or "-"
    if len(run_ids) > SHOWN_RUN_IDS:
        runs += (f' <details><summary>+{len(run_ids) - SHOWN_RUN_IDS} more</summary>'
                 + ", ".join(f"<code>{_e(r)}</code>" for r in run_ids[SHOWN_RUN_IDS:]) + "</details>")
    versions = ", ".join(f"{_e(k)} {_e(v)}" for k, v in (fig.get("versions") or {}).items()) or "-"
    output = Path(result.get("output") or f"{result.get('name')}.ipynb").name
    png = relative_href(figure_path(out_dir, fig))
    image = (f'<a href="{_e(png)}"><img src="{_e(png)}" alt="figure {_e(name)}"></a>' if png
             else f'<p class="muted">figure {_e(name)} (no relative path)</p>')
    scratch = not_profile(fig)
    if scratch:
        badge += '<span class="badge scratch">not the profile\'s parameters</span>'
    classes = "card" + (" failing" if failing else "") + (" scratch" if scratch else "")
    marked = ' data-scratch="1"' if scratch else ""
    return f"""<article class="{classes}" id="{_e(card_id)}" data-figure="{_e(name)}"{marked}>
<h2>{_e(name)}{badge}</h2>
{_scratch_note(fig) if scratch else ''}{image}
<p class="caption">{_e(fig.get("caption"))}</p>
{_claims_table(claims)}
{_numbers(fig.get("numbers") or {})}
<dl class="meta">
<dt>notebook</dt><dd>{_link_if(out_dir, output, output)}</dd>
<dt>params</dt><dd><code>{_e(fig.get("params_file") or fig.get("profile_params_file") or "-")}</code></dd>
{_parameters_row(fig)}
<dt>runs</dt><dd>{runs}</dd>
<dt>token views</dt><dd>{_token_view_links(out_dir, list(result.get("token_views") or []))}</dd>
<dt>git</dt><dd><code>{_e(fig.get("git_sha"))}</code></dd>
<dt>versions</dt><dd>{versions}</dd>
<dt>time</dt><dd>{_e(fig.get("time"))}</dd>
</dl>
</article>"""


def _scratch_note(fig: dict) -> str:
    return (f'<p class="scratch-note">Not drawn with the parameters of profile <code>{_e(fig.get("profile"))}</code>'
            f' ({_e(fig.get("not_profile_reason") or "-")}): kept under <code>scratch/</code>, apart from the '
            "profile's figures.</p>\n")


def _parameters_row(fig: dict) -> str:
    values = fig.get("parameters")
    if not values:
        return ""
    text = ", ".join(f"{_e(k)} = <code>{_e(v)}</code>" for k, v in values.items())
    return f"<dt>parameters</dt><dd>{text}</dd>"


def _runs_table(state: dict[str, dict], out_dir: Path) -> str:
    rows = []
    for name in sorted(state):
        r = state[name]
        failed = r.get("status") != "ok"
        output = Path(r.get("output") or f"{name}.ipynb").name
        error = ""
        if r.get("error"):
            error = (f"{_e('in ' + r['cell'] + ': ') if r.get('cell') else ''}"
                     f"<code>{_e(r['error'])}</code>")
        status = f'<span class="{"fail" if failed else "ok"}">{_e(r.get("status"))}</span>'
        rows.append(f'<tr class="{"failed" if failed else "ok"}"><td>{_link_if(out_dir, output, name)}</td>'
                    f'<td>{status}</td><td>{_e(r.get("seconds", "-"))}</td>'
                    f'<td>{len(r.get("figures") or [])}</td>'
                    f'<td>{_token_view_links(out_dir, list(r.get("token_views") or [])) if r.get("token_views") else ""}</td>'
                    f'<td>{error}</td></tr>')
    return ('<table class="runs"><thead><tr><th>execution</th><th>status</th><th>s</th><th>figures</th>'
            f'<th>token views</th><th>error</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def render_gallery(state: dict[str, dict], out_dir: Path, git_sha: str = "unknown",
                   versions: dict | None = None, generated: str | None = None) -> str:
    """The HTML page of ``state`` (execution name -> result dict with ``figures`` records).

    Links are relative to ``out_dir`` (where the page goes): ``figures/<name>.png``, ``<execution>.ipynb``,
    ``figures/<token view>.html``.
    """
    out_dir = Path(out_dir)
    cards, nav, ids = [], [], set()
    n_bounded = n_fail = n_scratch = 0
    for name in sorted(state):
        result = state[name]
        for fig in result.get("figures") or []:
            card_id = f"fig-{fig.get('name', '?')}"
            while card_id in ids:
                card_id += "-"
            ids.add(card_id)
            verdicts = [claim_verdict(c) for c in fig.get("claims") or []]
            n_scratch += not_profile(fig)
            n_bounded += sum(v != "observed" for v in verdicts)
            n_fail += verdicts.count("FAIL")
            cls = ' class="fail"' if "FAIL" in verdicts else ""
            nav.append(f'<a href="#{_e(card_id)}"{cls}>{_e(fig.get("name"))}</a>')
            cards.append(_card(fig, result, out_dir, card_id))
    failed_runs = [n for n, r in state.items() if r.get("status") != "ok"]
    profile = out_dir.name
    versions_text = ", ".join(f"{_e(k)} {_e(v)}" for k, v in (versions or {}).items())
    claims = f"claims: {n_bounded - n_fail} of {n_bounded} hold" if n_bounded else "no claim with a bound"
    summary = (f'{_count(len(state), "execution")}: <span class="ok">{len(state) - len(failed_runs)} ok</span>, '
               f'<span class="{"fail" if failed_runs else "ok"}">{len(failed_runs)} failed</span> · '
               f'{_count(len(cards), "figure")} · {claims}'
               + (f', <span class="fail">{n_fail} FAIL</span>' if n_fail else "")
               + (f' · <span class="scratch">{n_scratch} not drawn with the profile\'s parameters</span>'
                  if n_scratch else ""))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Figures of profile {_e(profile)}</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>Figures of profile <code>{_e(profile)}</code></h1>
<p class="meta">git <code>{_e(git_sha)}</code>{'; ' + versions_text if versions_text else ''}{'; written ' + _e(generated) if generated else ''}.
Markdown: <a href="index.md">index.md</a>.</p>
<p class="summary">{summary}</p>
<nav aria-label="figures">{"".join(nav)}</nav>
</header>
<section>
<details{' open' if failed_runs else ''}><summary>executions ({len(state)})</summary>
{_runs_table(state, out_dir)}
</details>
</section>
<main class="cards">
{chr(10).join(cards)}
</main>
</body>
</html>
"""


def write_gallery(out_dir: Path, state: dict[str, dict], git_sha: str = "unknown", versions: dict | None = None,
                  generated: str | None = None) -> Path:
    """Write ``render_gallery(...)`` to ``<out_dir>/index.html``; returns its path."""
    path = Path(out_dir) / "index.html"
    path.write_text(render_gallery(state, out_dir, git_sha, versions, generated), encoding="utf-8")
    return path
