#!/usr/bin/env python3
"""Execute every notebook in notebooks/ with the Deno Jupyter kernel and fail on any error.

Usage: python3 tools/run_notebooks.py [--write] [NOTEBOOK ...]

- The kernel is the Deno that `npm install` put in node_modules; its kernel spec is written to a temporary
  Jupyter directory (JUPYTER_PATH, JUPYTER_DATA_DIR, JUPYTER_RUNTIME_DIR), never to the user's home.
- Each code cell is sent to the kernel in order; the run fails on an `error` output (a notebook asserts its
  claims by throwing), on a non-"ok" execute reply, on output to stderr, or on a cell timeout.
- Deno 2.9's kernel can publish a cell's outputs *after* its `idle` status (nbconvert --execute drops those),
  so after `idle` this runner keeps reading until the kernel has been quiet for a short while.
- Prints each cell's wall time, and each notebook's wall time and its kernel's CPU time (user + sys, read from
  the ended kernel process: the wall time alone says little on a loaded machine).
- `--write` saves the outputs back into the notebooks (to commit them, so they read well on GitHub); without
  it the notebooks are left untouched.
- Exit status 0: all passed; 1: a notebook failed; 77: skipped (no jupyter_client/nbformat, or no Deno).

Needs Debian's python3-jupyter-client and python3-nbformat (pulled in by python3-nbclient).
"""

import json
import os
import queue
import re
import resource
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DENO = os.path.join(ROOT, "node_modules", "deno", "deno")
# Bounds a hang, not speed. The slowest cells (soco.ipynb's training, fwsvd.ipynb's ratio sweep) take about a
# minute on a quiet 2-core machine and over five at load 10 (five suites at once): 300 s failed 2 suites of 5.
CELL_TIMEOUT = 1800.0  # seconds
QUIET = 0.3  # seconds of silence after `idle` before a cell is considered complete
SKIP = 77
LATE = [0]  # outputs that arrived after their cell's idle status (kept; nbconvert would drop them)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

try:
    import nbformat
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
except ImportError as e:  # the notebooks are optional: say why they are skipped
    print(f"notebooks: skipped, Jupyter is not installed ({e}); apt-get install python3-jupyter-client python3-nbformat")
    sys.exit(SKIP)

KERNEL_SPEC = {
    "argv": [DENO, "jupyter", "--kernel", "--conn", "{connection_file}"],
    "display_name": "Deno",
    "language": "typescript",
    "env": {"NO_COLOR": "1"},
}
# What --write records, so that Jupyter, VS Code and GitHub pick a Deno kernel (`deno jupyter --install`);
# language_info is the kernel's own (kernel_info_reply).
KERNELSPEC = {"name": "deno", "display_name": "Deno", "language": "typescript"}


def output_of(msg):
    """The nbformat output for an iopub message, or None for messages that are not outputs."""
    t, c = msg["msg_type"], msg["content"]
    if t == "stream":
        return nbformat.v4.new_output("stream", name=c["name"], text=ANSI.sub("", c["text"]))
    if t in ("display_data", "update_display_data"):
        return nbformat.v4.new_output("display_data", data=c["data"], metadata=c.get("metadata", {}))
    if t == "execute_result":
        return nbformat.v4.new_output(
            "execute_result", data=c["data"], metadata=c.get("metadata", {}), execution_count=c["execution_count"]
        )
    if t == "error":
        return nbformat.v4.new_output(
            "error", ename=c["ename"], evalue=c["evalue"], traceback=[ANSI.sub("", l) for l in c["traceback"]]
        )
    return None


def merge_streams(outputs):
    """Join consecutive stream outputs of the same name, as Jupyter does, so saved notebooks stay compact."""
    merged = []
    for o in outputs:
        if o.output_type == "stream" and merged and merged[-1].output_type == "stream" and merged[-1].name == o.name:
            merged[-1].text += o.text
        else:
            merged.append(o)
    return merged


def run_cell(km, kc, source, earlier):
    """Execute one cell; returns (msg_id, outputs, execution_count, reply status). Raises TimeoutError.

    `earlier` maps the msg_id of each earlier cell to that cell: an output of an earlier cell that comes later
    still (after its quiet period) is appended to it, so it is neither lost nor shown under the wrong cell.
    """
    msg_id = kc.execute(source, store_history=True, allow_stdin=False)
    deadline = time.monotonic() + CELL_TIMEOUT
    outputs, count, idle_at = [], None, None
    while True:
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"no idle status within {CELL_TIMEOUT:.0f} s")
        wait = QUIET if idle_at is not None else min(1.0, deadline - now)
        try:
            msg = kc.get_iopub_msg(timeout=wait)
        except queue.Empty:
            if idle_at is not None:
                break  # idle, then quiet: complete
            if not km.is_alive():
                raise TimeoutError("the kernel died")
            continue
        parent = msg.get("parent_header", {}).get("msg_id")
        if parent != msg_id:
            o = output_of(msg) if parent in earlier else None
            if o is not None:
                earlier[parent].outputs.append(o)
                LATE[0] += 1
            continue
        t = msg["msg_type"]
        if t == "status" and msg["content"]["execution_state"] == "idle":
            idle_at = time.monotonic()
        elif t == "execute_input":
            count = msg["content"].get("execution_count", count)
        elif t == "clear_output":
            outputs = []
        else:
            o = output_of(msg)
            if o is not None:
                outputs.append(o)
                if idle_at is not None:
                    LATE[0] += 1
    reply = kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
    count = reply["content"].get("execution_count", count)
    return msg_id, merge_streams(outputs), count, reply["content"].get("status", "error")


def problems_of(outputs, status):
    """Why a cell failed, or an empty list."""
    found = []
    for o in outputs:
        if o.output_type == "error":
            found.append(f"{o.ename}: {o.evalue}")
        elif o.output_type == "stream" and o.name == "stderr" and o.text.strip():
            found.append(f"stderr: {o.text.strip()[:500]}")
    if status != "ok" and not found:
        found.append(f"execute reply status {status!r}")
    return found


def children_cpu():
    """CPU seconds (user + sys) of the child processes that have ended: a kernel's, once it is shut down."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_notebook(path, ksm, write, log_path):
    """Run one notebook in a fresh kernel; returns (wall seconds, kernel CPU seconds, failure messages)."""
    nb = nbformat.read(path, as_version=4)
    t0, cpu0 = time.monotonic(), children_cpu()
    km = KernelManager(kernel_name="deno", kernel_spec_manager=ksm)
    # The kernel's own output (Deno's "unstable" warning, a crash) goes to a log shown only on failure.
    log = open(log_path, "w")
    km.start_kernel(cwd=os.path.dirname(path), stdout=log, stderr=log)
    kc = km.client()
    kc.start_channels()
    failures, info, earlier = [], None, {}
    try:
        kc.wait_for_ready(timeout=60)
        info = kc.kernel_info(reply=True, timeout=30)["content"].get("language_info")
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            t = time.monotonic()
            try:
                msg_id, outputs, count, status = run_cell(km, kc, cell.source, earlier)
            except TimeoutError as e:
                failures.append(f"cell {i}: {e}")
                break
            cell.outputs, cell.execution_count = outputs, count
            earlier[msg_id] = cell
            bad = problems_of(outputs, status)
            print(f"  cell {i:2d}  {time.monotonic() - t:6.2f} s  {'FAILED' if bad else 'ok'}", flush=True)
            if bad:
                failures.extend(f"cell {i}: {p}" for p in bad)
                break  # later cells depend on this one
        if not failures:  # an output that came late to an earlier cell may be an error too
            for i, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    cell.outputs = merge_streams(cell.outputs)
                    failures.extend(f"cell {i} (late output): {p}" for p in problems_of(cell.outputs, "ok"))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        log.close()
    if failures:
        with open(log_path) as f:
            tail = [l.rstrip() for l in f.readlines()[-20:] if "is unstable" not in l]
        failures.extend(f"kernel: {l}" for l in tail if l)
    seconds, cpu = time.monotonic() - t0, children_cpu() - cpu0
    if write and not failures:
        nb.metadata["kernelspec"] = KERNELSPEC
        if info:
            nb.metadata["language_info"] = info
        nbformat.write(nb, path)
    return seconds, cpu, failures


def main(argv):
    write = "--write" in argv
    names = [a for a in argv if not a.startswith("--")]
    nbdir = os.path.join(ROOT, "notebooks")
    paths = [os.path.abspath(n) for n in names] or sorted(
        os.path.join(nbdir, f) for f in os.listdir(nbdir) if f.endswith(".ipynb")
    )
    if not os.access(DENO, os.X_OK):
        print(f"notebooks: skipped, no Deno at {DENO} (run npm install)")
        return SKIP
    tmp = tempfile.mkdtemp(prefix="svd-llm-jupyter-")
    try:
        # Keep every Jupyter file (kernel spec, connection files) out of the user's home.
        for var, sub in (("JUPYTER_PATH", "data"), ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                         ("JUPYTER_CONFIG_DIR", "config")):
            os.environ[var] = os.path.join(tmp, sub)
        os.environ["NO_COLOR"] = "1"
        kdir = os.path.join(tmp, "data", "kernels", "deno")
        os.makedirs(kdir)
        os.makedirs(os.path.join(tmp, "runtime"))
        with open(os.path.join(kdir, "kernel.json"), "w") as f:
            json.dump(KERNEL_SPEC, f)
        ksm = KernelSpecManager(kernel_dirs=[os.path.join(tmp, "data", "kernels")])
        total, total_cpu, failed = 0.0, 0.0, []
        for p in paths:
            print(f"notebook {os.path.relpath(p, ROOT)}", flush=True)
            seconds, cpu, failures = run_notebook(p, ksm, write, os.path.join(tmp, "kernel.log"))
            total += seconds
            total_cpu += cpu
            saved = " (outputs saved)" if write and not failures else ""
            print(f"  {'FAILED' if failures else 'passed'} in {seconds:.1f} s, kernel CPU {cpu:.1f} s{saved}")
            for f_ in failures:
                print(f"  - {f_}")
            if failures:
                failed.append(os.path.relpath(p, ROOT))
        late = f", {LATE[0]} output(s) arrived after idle and were kept" if LATE[0] else ""
        print(f"notebooks: {len(paths) - len(failed)} passed, {len(failed)} failed, {total:.1f} s "
              f"(kernel CPU {total_cpu:.1f} s){late}")
        return 1 if failed else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
