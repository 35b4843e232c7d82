"""markdown.js on its own: Markdown becomes structure, and anything else stays text."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

RENDER_JS = """
async (sources) => {
  const { renderMarkdown } = await import('/markdown.js');
  return sources.map((source) => {
    const box = document.createElement('div');
    box.append(renderMarkdown(source));
    const active = 'script, iframe, svg, img, object, embed, [onerror], [onload], [href^="javascript" i], [href^="data" i]';
    return [box.innerHTML, box.querySelectorAll(active).length];
  });
}
"""


@pytest.fixture
async def render(browser, dari):
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{dari.http}/healthz")  # any page of the origin, to import its modules

    async def run(*sources: str) -> list[str]:
        results = await page.evaluate(RENDER_JS, list(sources))
        assert [count for _, count in results] == [0] * len(sources), "no active content, ever"
        return [html for html, _ in results]

    return run


async def test_markdown_structure(render):
    html = await render(
        "# Title\n\nSome **bold**, *italic*, ~~gone~~ and `code`.",
        "- one\n- two\n  - nested\n\n1. first\n2. second",
        "```python\nprint('<b>hi</b>')\n```",
        "| a | b |\n|---|:-:|\n| 1 | 2 |",
        "> quoted\n> more",
        'see https://example.com/x, or [docs](https://example.com/docs "t")',
        "line one\nline two",
    )
    assert (
        html[0]
        == '<h3 class="md-h">Title</h3><p>Some <strong>bold</strong>, <em>italic</em>, <del>gone</del> and <code>code</code>.</p>'
    )
    assert (
        html[1]
        == "<ul><li>one</li><li>two<ul><li>nested</li></ul></li></ul><ol><li>first</li><li>second</li></ol>"
    )
    assert html[2] == (
        '<div class="md-codeblock"><div class="code-head"><span class="code-lang">python</span>'
        '<button class="code-copy" type="button" aria-label="Copy the python code">'
        '<span class="copy-label">Copy</span></button></div>'
        '<pre class="md-code" data-lang="python"><code data-lang="python" class="highlighted">'
        "print(<span class=\"tok-str\">'&lt;b&gt;hi&lt;/b&gt;'</span>)</code></pre></div>"
    ), "the code stays text; only the string is coloured"
    assert "<th>a</th>" in html[3] and 'style="text-align: center;">2</td>' in html[3]
    assert html[4] == "<blockquote><p>quoted<br>more</p></blockquote>"
    assert (
        '<a href="https://example.com/x" target="_blank" rel="noopener noreferrer nofollow">https://example.com/x</a>,'
        in html[5]
    )
    assert '<a href="https://example.com/docs"' in html[5]
    assert html[6] == "<p>line one<br>line two</p>"


async def test_html_and_dangerous_links_stay_inert(render):
    html = await render(
        '<img src=x onerror="alert(1)">',
        "<script>alert(1)</script>",
        "[x](javascript:alert(1)) [y](JaVaScRiPt:alert(1)) [z](data:text/html,<b>) [w](vbscript:x)",
        "![pic](https://example.com/a.png)",
        "<a href='javascript:alert(1)'>a</a> <iframe src=//evil></iframe> <svg onload=alert(1)>",
        "**<b>bold html</b>** `<i>code</i>`",
    )
    assert html[0] == '<p>&lt;img src=x onerror="alert(1)"&gt;</p>'
    assert html[1] == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert "<a" not in html[2], "only http(s) and mailto links become links"
    assert "<img" not in html[3] and 'href="https://example.com/a.png"' in html[3]
    assert (
        html[5]
        == "<p><strong>&lt;b&gt;bold html&lt;/b&gt;</strong> <code>&lt;i&gt;code&lt;/i&gt;</code></p>"
    )


async def test_unfinished_markdown_while_streaming_renders_without_breaking(render):
    html = await render(
        "Here:\n```js\nconst a = 1;", "**half bold", "[half](https://exa", "| a |\n|--"
    )
    assert html[0].startswith('<p>Here:</p><div class="md-codeblock">')
    assert html[0].endswith(
        '<pre class="md-code" data-lang="js"><code data-lang="js" class="highlighted">'
        '<span class="tok-kw">const</span> a = <span class="tok-num">1</span>;</code></pre></div>'
    )
    assert html[1] == "<p>**half bold</p>"
    assert html[2].startswith("<p>[half](")
    assert "<table" in html[3] or "<p>" in html[3]
