"""highlight.js on its own: comments, strings, numbers, keywords and literals of the languages
it knows are marked; the text is never changed; a language it does not know stays plain."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

TOKENS_JS = """
async (cases) => {
  const { highlight } = await import('/highlight.js');
  return cases.map(([code, language]) => {
    const fragment = highlight(code, language);
    if (!fragment) return null;
    const box = document.createElement('div');
    box.append(fragment);
    const tokens = [...box.querySelectorAll('span')].map((s) => [s.className.slice(4), s.textContent]);
    return { text: box.textContent, tokens, markup: box.querySelectorAll('*:not(span)').length };
  });
}
"""


@pytest.fixture
async def tokens(browser, dari):
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{dari.http}/healthz")  # any page of the origin, to import its modules

    async def run(*cases: tuple[str, str]) -> list[dict | None]:
        results = await page.evaluate(TOKENS_JS, [list(case) for case in cases])
        for (code, _), result in zip(cases, results, strict=True):
            if result is not None:
                assert result["text"] == code, "highlighting never changes the text"
                assert result["markup"] == 0, "only text and token spans"
        return results

    return run


async def test_languages_are_coloured_and_unknown_ones_are_left_alone(tokens):
    python, js, bash, sql, json, unknown, html_in_string = await tokens(
        ('def f(x=1.5):\n    """doc "quoted" here"""\n    return None  # done', "py"),
        ("const s = `a ${b}`; // note\nlet n = 0x1F; /* block */", "ts"),
        ('echo "$HOME" # comment\nurl=a#b; exit 0', "sh"),
        ("SELECT name FROM users WHERE id = 'x' -- why", "sql"),
        ('{"a": [1, -2.5e3, true, null]}', "json"),
        ("whatever 'this' is", "brainfuck"),
        ("x = '<script>alert(1)</script>'", "python"),
    )
    assert python["tokens"] == [
        ["kw", "def"],
        ["num", "1.5"],
        ["str", '"""doc "quoted" here"""'],
        ["kw", "return"],
        ["lit", "None"],
        ["com", "# done"],
    ]
    assert ["str", "`a ${b}`"] in js["tokens"] and ["com", "// note"] in js["tokens"]
    assert ["num", "0x1F"] in js["tokens"] and ["com", "/* block */"] in js["tokens"]
    assert ["kw", "const"] in js["tokens"] and ["kw", "let"] in js["tokens"]
    # In a shell, # starts a comment only after a space: a#b is a word.
    assert [t for t in bash["tokens"] if t[0] == "com"] == [["com", "# comment"]]
    assert ["kw", "exit"] in bash["tokens"] and ["num", "0"] in bash["tokens"]
    assert ["kw", "SELECT"] in sql["tokens"] and ["kw", "WHERE"] in sql["tokens"]
    assert ["str", "'x'"] in sql["tokens"] and ["com", "-- why"] in sql["tokens"]
    assert json["tokens"] == [
        ["str", '"a"'],
        ["num", "1"],
        ["num", "2.5e3"],
        ["lit", "true"],
        ["lit", "null"],
    ]
    assert unknown is None
    assert html_in_string["tokens"] == [["str", "'<script>alert(1)</script>'"]]
