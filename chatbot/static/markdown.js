// Model output as Markdown, never as HTML. Three layers: markdown-it with `html: false`
// shows raw HTML as text and refuses javascript: links; images become plain links (nothing
// loads from other servers); DOMPurify, with a short allow-list, cleans whatever the first
// two produced before it reaches the page. The CSP (no inline script) is the fourth.

import MarkdownIt from "./vendor/markdown-it.esm.min.mjs";
import DOMPurify from "./vendor/purify.es.mjs";
import hljs from "./vendor/highlight.min.js";
import { copyButton } from "./copy.js";

const md = new MarkdownIt({
  html: false,
  linkify: true,
  typographer: false,
  highlight(code, language) {
    if (language && hljs.getLanguage(language)) {
      try {
        return hljs.highlight(code, { language, ignoreIllegals: true }).value;
      } catch {
        // Fall back to markdown-it's escaped text.
      }
    }
    return "";
  },
});

// An image would be fetched from wherever the model says: show it as a link instead.
md.renderer.rules.image = (tokens, index, options, env, self) => {
  const token = tokens[index];
  const alt = self.renderInlineAsText(token.children, options, env) || "image";
  const src = md.utils.escapeHtml(token.attrGet("src") || "");
  return `<a href="${src}" class="image-link">[image: ${md.utils.escapeHtml(alt)}]</a>`;
};

// Tables align columns with style="" attributes, which the CSP refuses: classes instead.
md.core.ruler.push("align_classes", (state) => {
  for (const token of state.tokens) {
    const style = token.attrGet("style");
    if (style === null) continue;
    const align = /text-align:(left|center|right)/.exec(style);
    token.attrs = token.attrs.filter(([name]) => name !== "style");
    if (align) token.attrJoin("class", "align-" + align[1]);
  }
});

const PURIFY = {
  ALLOWED_TAGS: [
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "li", "ol", "p", "pre", "s", "span", "strong", "sub", "sup", "table", "tbody", "td",
    "th", "thead", "tr", "ul",
  ],
  ALLOWED_ATTR: ["href", "class", "start", "title"],
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

function sanitize(html) {
  return DOMPurify.sanitize(html, PURIFY);
}

// The document's top-level blocks: [first token index, end index] pairs.
function topLevelBlocks(tokens) {
  const blocks = [];
  let start = 0;
  let depth = 0;
  tokens.forEach((token, i) => {
    depth += token.nesting;
    if (depth === 0) {
      blocks.push([start, i + 1]);
      start = i + 1;
    }
  });
  return blocks;
}

// A toolbar with the language and a Copy button above every code block.
function decorate(fragment) {
  for (const pre of fragment.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    const wrapper = document.createElement("div");
    wrapper.className = "code-block";
    const bar = document.createElement("div");
    bar.className = "code-bar";
    const language = document.createElement("span");
    language.className = "code-language";
    const match = code && /(?:^|\s)language-(\S+)/.exec(code.className);
    language.textContent = match ? match[1] : "code";
    bar.append(language, copyButton(() => (code || pre).textContent, "Copy code"));
    pre.replaceWith(wrapper);
    wrapper.append(bar, pre);
    if (code && match && hljs.getLanguage(match[1])) code.classList.add("hljs");
  }
  return fragment;
}

/** Markdown rendered into one element, again and again as a reply streams. Finished
 * blocks (paragraphs, lists, code blocks) whose source did not change are kept as they are;
 * only the ones that changed, usually the last, are rendered again. So a long reply costs
 * little per frame, nothing flickers, and a selection in an earlier block survives. */
export class MarkdownView {
  constructor(element) {
    this.element = element;
    this.blocks = [];
  }

  /** Show `text`; `force` renders every block again (for the final text). */
  render(text, force = false) {
    const source = text.replace(/\r\n?/g, "\n");
    const env = {};
    const tokens = md.parse(source, env);
    const lines = source.split("\n");
    const ranges = topLevelBlocks(tokens);
    if (ranges.some(([start]) => !tokens[start].map)) {
      // Not expected from markdown-it; render the whole text as one block.
      this.show(0, source, force, () => md.renderer.render(tokens, md.options, env));
      this.trim(1);
      return;
    }
    ranges.forEach(([start, end], i) => {
      const [first, last] = tokens[start].map;
      const blockSource = lines.slice(first, last).join("\n");
      this.show(i, blockSource, force, () => md.renderer.render(tokens.slice(start, end), md.options, env));
    });
    this.trim(ranges.length);
  }

  show(index, source, force, html) {
    const current = this.blocks[index];
    if (current && current.source === source && !force) return;
    const element = document.createElement("div");
    element.className = "md-block";
    element.append(decorate(sanitize(html())));
    if (current) current.element.replaceWith(element);
    else this.element.append(element);
    this.blocks[index] = { source, element };
  }

  trim(count) {
    while (this.blocks.length > count) this.blocks.pop().element.remove();
  }
}
