"""One ComfyUI prompt for several same-shape jobs: the batched graph and how to read it back.

Every job's graph is rendered as for a lone run. Nodes that are the same in every job's graph
(the checkpoint, a LoRA, anything that depends only on the shape) are kept once; nodes that
differ (the text encoders) are kept per job. The one KSampler becomes
`StencilBatchKSampler` over stacked conditionings (nodes/stencil_batch), its
`EmptyLatentImage` holds every job's rows, what follows the sampler (decode, resize) runs
once on the whole batch, and each job's output node receives its own rows through
`StencilSplitImages`. A graph of another shape is not batched (BatchRefused says why).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Kept in step with nodes/stencil_batch (a test checks it).
BATCHABLE_SAMPLERS = frozenset(
    {
        "euler", "heun", "heunpp2", "dpm_2", "lms", "dpmpp_2m", "ipndm", "ipndm_v", "deis",
        "ddim", "uni_pc", "uni_pc_bh2",
        "euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "ddpm", "lcm", "dpm_fast",
        "dpm_adaptive",
        "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde",
        "dpmpp_3m_sde_gpu",
    }
)  # fmt: skip
MAX_JOBS = 16  # the stacking node's sockets
# Nodes that may follow the sampler: each works on every image of a batch alike.
ROW_WISE = frozenset({"VAEDecode", "VAEDecodeTiled", "ImageScaleBy", "ImageScale"})
OUTPUT_NODES = frozenset({"SaveImage"})
SAMPLER_INPUTS = ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")


class BatchRefused(Exception):
    """These jobs cannot share one prompt; the message says why (they run alone)."""


@dataclass(frozen=True)
class BatchGraph:
    """A batched prompt and, per job, the output nodes whose files are that job's."""

    graph: dict[str, Any]
    outputs: dict[str, list[str]]  # job id -> output node ids in the batched graph
    rows: dict[str, int]  # job id -> images it asked for


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _signatures(graph: Mapping[str, Any]) -> dict[str, str]:
    """A node's signature: its type, literal inputs and the signatures of what feeds it."""
    memo: dict[str, str] = {}

    def sig(node_id: str, seen: frozenset[str]) -> str:
        if node_id in memo:
            return memo[node_id]
        if node_id in seen:
            raise BatchRefused(f"the graph has a cycle through node {node_id}")
        node = graph[node_id]
        inputs = {
            k: ["link", sig(v[0], seen | {node_id}), v[1]] if _is_link(v) else v
            for k, v in sorted(node["inputs"].items())
        }
        memo[node_id] = json.dumps([node["class_type"], inputs], sort_keys=True)
        return memo[node_id]

    return {n: sig(n, frozenset()) for n in graph}


def _sampler(graph: Mapping[str, Any]) -> str:
    found = [n for n, node in graph.items() if node["class_type"] == "KSampler"]
    if len(found) != 1:
        raise BatchRefused(f"a batch needs exactly one KSampler, the graph has {len(found)}")
    return found[0]


def _downstream(graph: Mapping[str, Any], start: str) -> set[str]:
    out, frontier = set(), {start}
    while frontier:
        nxt = {
            n
            for n, node in graph.items()
            if n not in out
            and any(_is_link(v) and v[0] in frontier for v in node["inputs"].values())
        }
        out |= nxt
        frontier = nxt
    return out


def batch_key(graph: Mapping[str, Any]) -> str:
    """What jobs must share to be batched: the graph with per-job values blanked out.

    Two jobs with equal keys differ only in their prompts, seeds and image counts.
    """
    s = _sampler(graph)
    blank = json.loads(json.dumps(graph))
    for name in ("seed",):
        blank[s]["inputs"][name] = None
    for node in blank.values():
        if node["class_type"] == "CLIPTextEncode":
            node["inputs"]["text"] = None
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"]["batch_size"] = None
        if node["class_type"] in OUTPUT_NODES:
            node["inputs"]["filename_prefix"] = None
    return json.dumps(blank, sort_keys=True)


def build_batch(jobs: Sequence[tuple[str, Mapping[str, Any]]]) -> BatchGraph:
    """One prompt for `jobs` ((job id, rendered graph) pairs of one template and shape)."""
    if not 1 <= len(jobs) <= MAX_JOBS:
        raise BatchRefused(f"a batch holds 1 to {MAX_JOBS} jobs, not {len(jobs)}")
    keys = {batch_key(g) for _, g in jobs}
    if len(keys) != 1:
        raise BatchRefused("the jobs differ in more than prompts, seeds and image counts")
    first = jobs[0][1]
    s = _sampler(first)
    ks = first[s]["inputs"]
    if ks["sampler_name"] not in BATCHABLE_SAMPLERS:
        raise BatchRefused(f"sampler {ks['sampler_name']} keeps no per-job noise")
    if not (
        _is_link(ks["latent_image"])
        and first[ks["latent_image"][0]]["class_type"] == ("EmptyLatentImage")
    ):
        raise BatchRefused("a batch starts from an EmptyLatentImage")
    latent_id = ks["latent_image"][0]
    after = _downstream(first, s)
    for n in after:
        ct = first[n]["class_type"]
        if ct not in ROW_WISE | OUTPUT_NODES:
            raise BatchRefused(f"{ct} after the sampler may mix images across a batch")
    outputs = [n for n in after if first[n]["class_type"] in OUTPUT_NODES]
    if not outputs:
        raise BatchRefused("the graph saves no image")

    sigs = [_signatures(g) for _, g in jobs]
    # Kept once: nodes before the sampler that every job has alike.
    shared = {
        n for n in first if n not in after and n not in (s, latent_id)
        and all(n in g and sig[n] == sigs[0][n] for sig, (_, g) in zip(sigs, jobs, strict=True))
    }  # fmt: skip
    out: dict[str, Any] = {n: json.loads(json.dumps(first[n])) for n in shared}
    rows: dict[str, int] = {}
    job_outputs: dict[str, list[str]] = {}

    def per_job_copy(i: int, graph: Mapping[str, Any], node_id: str) -> list[Any]:
        """Link to node_id as job i sees it: the shared node, or job i's own copy."""
        if node_id in shared:
            return [node_id, 0]
        name = f"{node_id}.j{i}"
        if name not in out:
            node = json.loads(json.dumps(graph[node_id]))
            for k, v in node["inputs"].items():
                if _is_link(v):
                    node["inputs"][k] = [per_job_copy(i, graph, v[0])[0], v[1]]
            out[name] = node
        return [name, 0]

    stacks: dict[str, dict[str, Any]] = {
        side: {"class_type": "StencilStackConditioning", "inputs": {}} for side in ("pos", "neg")
    }
    seeds: list[str] = []
    for i, (job_id, g) in enumerate(jobs):
        kin = g[s]["inputs"]
        rows[job_id] = int(g[latent_id]["inputs"]["batch_size"])
        seeds.append(str(int(kin["seed"])))
        for side, name in (("pos", "positive"), ("neg", "negative")):
            src = kin[name]
            link = per_job_copy(i, g, src[0])
            stacks[side]["inputs"][f"c{i + 1}"] = [link[0], src[1]]
    row_text = ",".join(str(rows[j]) for j, _ in jobs)
    for stack in stacks.values():
        stack["inputs"]["rows"] = row_text
    out["stencil_pos"], out["stencil_neg"] = stacks["pos"], stacks["neg"]
    latent = json.loads(json.dumps(first[latent_id]))
    latent["inputs"]["batch_size"] = sum(rows.values())
    out[latent_id] = latent
    out[s] = {
        "class_type": "StencilBatchKSampler",
        "inputs": {
            "model": ks["model"],
            "positive": ["stencil_pos", 0],
            "negative": ["stencil_neg", 0],
            "latent_image": [latent_id, ks["latent_image"][1]],
            "seeds": ",".join(seeds),
            "rows": row_text,
            **{k: ks[k] for k in SAMPLER_INPUTS if k != "seed"},
        },
    }
    for n in after - set(outputs):
        out[n] = json.loads(json.dumps(first[n]))  # once, on the whole batch
    for i, (job_id, g) in enumerate(jobs):
        job_outputs[job_id] = []
        for n in sorted(outputs):
            node = json.loads(json.dumps(g[n]))
            split = f"stencil_split.{n}.j{i}"
            out[split] = {
                "class_type": "StencilSplitImages",
                "inputs": {"images": node["inputs"]["images"], "rows": row_text, "index": i},
            }
            node["inputs"]["images"] = [split, 0]
            out[f"{n}.j{i}"] = node
            job_outputs[job_id].append(f"{n}.j{i}")
    return BatchGraph(out, job_outputs, rows)
