/* journal-replay run timeline: a recorded Python traceback, made readable for an incident.
 *
 * Frames of the user's code are shown with paths relative to the folder they share; runs of
 * library frames (the standard library, site-packages, journal-replay itself) fold into one
 * closed <details> line. Everything is built as text nodes: a traceback is recorded data. */
(function () {
  "use strict";
  const FRAME = /^  File "(.*)", line (\d+), in (.*)$/;
  const LIBRARY = [
    /[\\/](site|dist)-packages[\\/]/,
    /[\\/]lib[\\/]python3(\.\d+)?[\\/]/,
    /^<frozen /,
    /[\\/](journal|replay)[\\/]_[^\\/]*\.py$/,
    /[\\/](journal|replay)[\\/](stores|integrations|_cli)[\\/]/,
  ];
  const isLibrary = (path) => LIBRARY.some((pattern) => pattern.test(path));

  /** The folder every user frame's absolute path starts with ("" if they share none). */
  function commonFolder(paths) {
    const absolute = paths.filter((p) => p.startsWith("/") || /^[A-Za-z]:[\\/]/.test(p));
    if (!absolute.length) return "";
    let parts = absolute[0].split(/[\\/]/).slice(0, -1);
    for (const path of absolute.slice(1)) {
      const other = path.split(/[\\/]/);
      let n = 0;
      while (n < parts.length && parts[n] === other[n]) n++;
      parts = parts.slice(0, n);
    }
    return parts.length > 1 ? parts.join("/") + "/" : "";
  }

  /** A library path from where it is recognisable: site-packages/pkg/..., python3.11/... */
  function libraryPath(path) {
    const site = path.search(/(site|dist)-packages[\\/]/);
    if (site >= 0) return path.slice(site);
    const lib = path.search(/python3(\.\d+)?[\\/]/);
    if (lib >= 0) return path.slice(lib);
    const ours = path.search(/(journal|replay)[\\/]/);
    return ours >= 0 ? path.slice(ours) : path;
  }

  /** Where a library frame comes from: its package, the stdlib module, or journal-replay. */
  function origin(path) {
    const parts = libraryPath(path).split(/[\\/]/);
    if (/^(site|dist)-packages$/.test(parts[0])) return (parts[1] || "").replace(/\.py$/, "");
    if (/^python3/.test(parts[0])) return (parts[1] || parts[0]).replace(/\.py$/, "");
    if (parts[0] === "journal" || parts[0] === "replay") return "journal-replay";
    return parts[0].startsWith("<frozen") ? "python" : parts[parts.length - 1];
  }

  /** Parse `text` into [{kind: "text", lines}, {kind: "frame", path, line, name, code}]. */
  function parse(text) {
    const lines = String(text).split("\n");
    const parts = [];
    for (let i = 0; i < lines.length; i++) {
      const m = FRAME.exec(lines[i]);
      if (!m) {
        const last = parts[parts.length - 1];
        if (last && last.kind === "text") last.lines.push(lines[i]);
        else parts.push({ kind: "text", lines: [lines[i]] });
        continue;
      }
      const frame = { kind: "frame", path: m[1], line: m[2], name: m[3], code: null };
      if (i + 1 < lines.length && /^    \S/.test(lines[i + 1]) && !FRAME.test(lines[i + 1])) {
        frame.code = lines[++i];
      }
      frame.library = isLibrary(frame.path);
      parts.push(frame);
    }
    return parts;
  }

  function frameText(frame, root) {
    let path = frame.path;
    if (frame.library) path = libraryPath(path);
    else if (root && path.startsWith(root)) path = path.slice(root.length);
    const head = `  File "${path}", line ${frame.line}, in ${frame.name}`;
    return frame.code === null ? head : `${head}\n${frame.code}`;
  }

  /** Nodes showing the traceback `text`: a <div class="traceback"> of pre blocks. */
  function render(text, el) {
    const parts = parse(text);
    const root = commonFolder(parts.filter((p) => p.kind === "frame" && !p.library)
      .map((p) => p.path));
    const box = el("div", "traceback");
    if (root) box.appendChild(el("div", "tb-root", `paths relative to ${root}`));
    let i = 0;
    while (i < parts.length) {
      const part = parts[i];
      if (part.kind === "frame" && part.library) {
        const run = [];
        while (i < parts.length && parts[i].kind === "frame" && parts[i].library) {
          run.push(parts[i++]);
        }
        const fold = el("details", "tb-library");
        const where = [...new Set(run.map((f) => origin(f.path)))].join(", ");
        fold.appendChild(el("summary", null,
          `${run.length} library frame${run.length > 1 ? "s" : ""} (${where})`));
        fold.appendChild(el("pre", "error", run.map((f) => frameText(f, root)).join("\n")));
        box.appendChild(fold);
        continue;
      }
      const text = part.kind === "text" ? part.lines.join("\n") : frameText(part, root);
      const previous = box.lastChild;
      if (previous && previous.tagName === "PRE") previous.textContent += "\n" + text;
      else box.appendChild(el("pre", "error", text));
      i++;
    }
    return box;
  }

  window.JTTraceback = { render, parse, commonFolder };
})();
