"""A Mermaid flowchart of a playbook, for admins reviewing a change (CLI and API).

One node per step, labelled with its id, its kind and what matters about it (targets,
quorum, veto, deadline, escalation tiers, durations). Edges follow execution order:
an approval fans out to `on_approved` / `on_rejected` on labelled edges, a branch to its
cases, a parallel step to its branches, which meet again at a join node. Every path ends
at `finish`.

Node ids are generated (`s1`, `s2`, ...) so that any step id is safe, and label text is
escaped with Mermaid entity codes, so quotes and brackets in messages can't break the
diagram.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from domain.directory import Target
from domain.durations import format_duration
from domain.playbook import Approval, Playbook, Step

_ENTITIES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "`": "#96;",
             "{": "#123;", "}": "#125;"}
_MAX_LABEL_LINE = 60

# A dangling edge: (from node id, edge label or None), waiting for the next node.
Exit = tuple[str, str | None]


def escape(text: str) -> str:
    """Text made safe inside a quoted Mermaid label (`#` first: the others insert one)."""
    out = "".join(_ENTITIES.get(char, char) for char in text)
    return " ".join(out.split())


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_LABEL_LINE else flat[: _MAX_LABEL_LINE - 1] + "…"


def _targets(targets: list[Target]) -> str:
    return ", ".join(t.label() for t in targets)


def quorum_text(approval: Approval) -> str:
    """`1 of legal AND 2 of comms-lead`, `all approvers`, `any approver`, `2 approvals`."""
    if approval.require is not None:
        return " AND ".join(f"{rule.min} of {rule.role}" for rule in approval.require)
    if approval.quorum == "all":
        return "all approvers"
    if approval.quorum == "any":
        return "any one approver"
    assert approval.quorum is not None
    k = approval.quorum.k
    return f"any {k} approval{'s' if k > 1 else ''}"


def _approval_lines(approval: Approval, playbook: Playbook) -> list[str]:
    deadline = approval.deadline or playbook.defaults.approval_deadline
    lines = [f"approvers: {_targets(approval.approvers)}", f"quorum: {quorum_text(approval)}"]
    if approval.veto:
        lines.append(f"veto: {', '.join(approval.veto)}")
    lines.append(f"deadline {format_duration(deadline)}")
    for tier in approval.escalation:
        who = [f"notify {_targets(tier.notify)}"] if tier.notify else []
        if tier.add_approvers:
            who.append(f"add {_targets(tier.add_approvers)}")
        repeat = (f", then every {format_duration(tier.every)} x{tier.repeat}"
                  if tier.repeat and tier.every else "")
        lines.append(f"at {format_duration(tier.after)}{repeat}: {'; '.join(who)}")
    return lines


def _step_lines(step: Step, playbook: Playbook) -> list[str]:
    """Key facts about a step, one per label line (unescaped)."""
    if step.notify is not None:
        return [f"to {_targets(step.notify.to)}", _short(step.notify.message)]
    if step.approval is not None:
        return _approval_lines(step.approval, playbook)
    if step.wait is not None:
        return [f"for {format_duration(step.wait.duration)}"]
    if step.action is not None:
        return [f"{step.action.method} {step.action.url}"]
    if step.branch is not None:
        return [f"on {step.branch.on}"]
    if step.parallel is not None:
        return [f"{len(step.parallel.branches)} branches at once"]
    if step.reminder is not None:
        return [f"every {format_duration(step.reminder.every)} until resolved",
                f"to {_targets(step.reminder.to)}"]
    if step.resolution is not None:
        return ["until the incident is resolved"]
    return []  # sequence: its steps speak for themselves


def _shape(kind: str, label: str) -> str:
    """Mermaid node shape per step kind."""
    shapes = {
        "approval": ("{{", "}}"), "branch": ("{", "}"), "wait": ("(", ")"),
        "action": ("[/", "/]"), "parallel": ("[[", "]]"), "reminder": (">", "]"),
        "resolution": ("([", "])"), "sequence": ("[[", "]]"),
    }
    left, right = shapes.get(kind, ("[", "]"))
    return f'{left}"{label}"{right}'


@dataclass
class _Builder:
    playbook: Playbook
    lines: list[str] = field(default_factory=list)
    count: int = 0

    def new_id(self) -> str:
        self.count += 1
        return f"s{self.count}"

    def connect(self, exits: list[Exit], node: str) -> None:
        for source, label in exits:
            arrow = f' -->|"{escape(label)}"| ' if label else " --> "
            self.lines.append(f"    {source}{arrow}{node}")

    def node(self, step: Step) -> str:
        node_id = self.new_id()
        name = f"<b>{escape(step.id)}</b> · {step.kind}"
        details = [escape(line) for line in _step_lines(step, self.playbook)]
        if step.name:
            details.insert(0, f"<i>{escape(_short(step.name))}</i>")
        label = "<br/>".join([name, *details])
        self.lines.append(f"    {node_id}{_shape(step.kind, label)}")
        return node_id

    def steps(self, steps: list[Step], exits: list[Exit]) -> list[Exit]:
        """Draw `steps` after `exits`; return the edges left dangling after the last one."""
        for step in steps:
            exits = self.step(step, exits)
        return exits

    def step(self, step: Step, exits: list[Exit]) -> list[Exit]:
        node = self.node(step)
        self.connect(exits, node)
        if step.approval is not None:
            return (self.steps(step.approval.on_approved, [(node, "approved")])
                    + self.steps(step.approval.on_rejected, [(node, "rejected")]))
        if step.branch is not None:
            out: list[Exit] = []
            for key, case in step.branch.cases.items():
                out += self.steps(case, [(node, key)])
            return out + self.steps(step.branch.default, [(node, "otherwise")])
        if step.parallel is not None:
            join = self.new_id()
            ends = [self.steps(branch, [(node, None)]) for branch in step.parallel.branches]
            self.lines.append(f'    {join}(("join"))')
            for branch_exits in ends:
                self.connect(branch_exits, join)
            return [(join, None)]
        if step.sequence is not None:
            return self.steps(step.sequence.steps, [(node, None)])
        if step.reminder is not None:
            every = format_duration(step.reminder.every)
            self.lines.append(f'    {node} -.->|"every {every}"| {node}')
        return [(node, None)]


def mermaid(playbook: Playbook) -> str:
    """The playbook as Mermaid `flowchart TD` source text."""
    builder = _Builder(playbook)
    title = escape(f"{playbook.id} v{playbook.version}")
    builder.lines += ["flowchart TD", f'    start(["{title}: incident opened"])']
    exits = builder.steps(playbook.steps, [("start", None)])
    builder.lines.append('    finish(["end"])')
    builder.connect(exits, "finish")
    return "\n".join(builder.lines) + "\n"
