"""What every page of the web client must satisfy, checked in the browser: it fits the viewport (no sideways
scrolling, primary controls on screen), axe-core finds no serious or critical accessibility violation, and the
Content-Security-Policy refused nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.web.conftest import ROOT

SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
# Buttons and links a user needs on each page: whichever of them is shown must be fully inside the viewport.
PRIMARY = ", ".join(
    (
        "button.primary",
        "[data-testid=send]",
        "[data-testid=stop]",
        "[data-testid=channel-send]",
        "[data-testid=prompt]",
        "[data-testid=channel-input]",
        "[data-testid=list-toggle]",
        "[data-testid=account-menu]",
        "[data-testid=members-toggle]",
        "[data-testid=share]",
        "nav[aria-label=Main] a, aside.rail nav a",
    )
)

# Records CSP refusals in the page (the browser fires `securitypolicyviolation` for each one).
CSP_RECORDER = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline'));
});
"""


def new_sized_context(browser: Any, base_url: str, size: str) -> Any:
    width, height = SIZES[size]
    context = browser.new_context(
        viewport={"width": width, "height": height},
        base_url=base_url,
        is_mobile=size == "phone",
        has_touch=size == "phone",
        device_scale_factor=1,
    )
    context.set_default_timeout(15_000)
    context.add_init_script(CSP_RECORDER)
    return context


def check_layout(page: Any, where: str) -> None:
    """No horizontal overflow, and every visible primary control lies inside the viewport."""
    box = page.evaluate(
        """(sel) => {
            const w = innerWidth, h = innerHeight;
            const out = [];
            for (const el of document.querySelectorAll(sel)) {
                const r = el.getBoundingClientRect();
                const style = getComputedStyle(el);
                if (r.width === 0 || r.height === 0 || style.visibility === 'hidden') continue;
                if (el.closest('dialog:not([open])')) continue;
                if (r.left < -0.5 || r.top < -0.5 || r.right > w + 0.5 || r.bottom > h + 0.5) {
                    out.push((el.getAttribute('aria-label') || el.textContent || el.tagName).trim().slice(0, 40)
                        + ` [${Math.round(r.left)},${Math.round(r.top)},${Math.round(r.right)},${Math.round(r.bottom)}]`);
                }
            }
            return { scroll: document.documentElement.scrollWidth, width: w, outside: out };
        }""",
        PRIMARY,
    )
    assert box["scroll"] <= box["width"], (
        f"{where}: page is {box['scroll']} px wide in a {box['width']} px viewport"
    )
    assert not box["outside"], f"{where}: controls outside the viewport: {box['outside']}"


def axe_scan(page: Any, where: str) -> None:
    """axe-core's rules on the page as it is now: no serious or critical violation."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(Path(AXE).read_text())
    found = page.evaluate(
        """async () => {
            const r = await axe.run(document, { resultTypes: ['violations'] });
            return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
                .map((v) => `${v.impact} ${v.id}: ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
        }"""
    )
    assert not found, f"{where}: axe-core violations: {found}"


def csp_violations(page: Any) -> list[str]:
    return page.evaluate("() => window.__csp || []")  # type: ignore[no-any-return]


def check_page(page: Any, where: str) -> None:
    """The three checks in one: layout, accessibility, and no CSP refusal so far."""
    check_layout(page, where)
    axe_scan(page, where)
    assert csp_violations(page) == [], f"{where}: CSP refused {csp_violations(page)}"
