"""Skills: named prompt templates with checked arguments, run with `pool_skill_run` and served
as MCP prompts.

Built-ins (switch off with `builtins = false`): code_review, write_tests and summarize take
`target`; refactor takes `target` and `goal`. User skills come from `[plugins.pool.skills.NAME]`
tables or from a folder of Markdown files (`skills_dir`: `NAME.md` or `NAME/SKILL.md`) with YAML
front matter (`name`, `description`, `arguments: [{name, description, required}]`); the body is
the prompt, with `{argument}` placeholders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hub import ToolError, argument_problems

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class SkillArgument:
    name: str
    description: str = ""
    required: bool = True


@dataclass
class Skill:
    name: str
    description: str
    template: str
    arguments: list[SkillArgument] = field(default_factory=list)
    source: str = "built in"

    def render(self, given: dict[str, Any] | None) -> str:
        given = dict(given or {})
        problems = argument_problems(self.arguments, given, blank_is_missing=True)
        if problems:
            raise ToolError(f"skill {self.name}: {problems}")
        values = {a.name: str(given.get(a.name, "")) for a in self.arguments}
        return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), self.template)


BUILTINS = [
    Skill(
        "code_review",
        "Review code for bugs, style and clarity.",
        "Review {target} for bugs, risky constructs, style and clarity. List each finding with its "
        "location, severity (critical/high/medium/low) and a concrete fix. Say plainly if you find nothing.",
        [SkillArgument("target", "File, directory or diff to review.")],
    ),
    Skill(
        "write_tests",
        "Write tests for code.",
        "Write thorough tests for {target}: normal cases, edge cases and error handling, in the "
        "project's existing test framework and style. Give each test file with its path.",
        [SkillArgument("target", "File or module to test.")],
    ),
    Skill(
        "summarize",
        "Summarize text or code.",
        "Summarize {target}: its purpose, its main parts and how they fit, and anything surprising. "
        "Be brief and concrete.",
        [SkillArgument("target", "File, directory or text to summarize.")],
    ),
    Skill(
        "refactor",
        "Refactor code toward a goal.",
        "Refactor {target} with this goal: {goal}. Keep behaviour the same, explain each change, and "
        "show the changed code.",
        [
            SkillArgument("target", "File or module to refactor."),
            SkillArgument("goal", "What the refactoring should achieve."),
        ],
    ),
]


def _arguments(raw: Any, where: str) -> list[SkillArgument]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{where}: arguments must be a list of {{name, description, required}}")
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"{where}: arguments[{i}] needs a name")
        out.append(
            SkillArgument(item["name"], str(item.get("description", "")), bool(item.get("required", True)))
        )
    return out


def parse_skill_file(path: Path) -> Skill:
    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n?(.*)$", text, re.S)
    if not match:
        raise ValueError(f"{path}: no YAML front matter (a block between --- lines at the top)")
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: front matter is not valid YAML: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: front matter must be a mapping")
    default_name = path.parent.name if path.name == "SKILL.md" else path.stem
    name = str(meta.get("name") or default_name)
    body = match.group(2).strip()
    if not body:
        raise ValueError(f"{path}: the skill has no prompt below its front matter")
    return Skill(
        name, str(meta.get("description", "")), body, _arguments(meta.get("arguments"), str(path)), str(path)
    )


def load_skills(
    builtins: bool, tables: dict[str, Any], folder: Path | None
) -> tuple[dict[str, Skill], list[str]]:
    """All skills by name, and the problems found (a bad file is skipped, not fatal)."""
    skills: dict[str, Skill] = {s.name: s for s in BUILTINS} if builtins else {}
    problems: list[str] = []
    for name, table in tables.items():
        where = f"[plugins.pool.skills.{name}]"
        try:
            skills[name] = Skill(
                name,
                str(table.get("description", "")),
                str(table["prompt"]),
                _arguments(table.get("arguments"), where),
                where,
            )
        except KeyError:
            problems.append(f"{where}: needs a prompt")
        except ValueError as exc:
            problems.append(str(exc))
    if folder is not None:
        if not folder.is_dir():
            problems.append(f"skills_dir {folder} is not a directory")
        else:
            for path in sorted([*folder.glob("*.md"), *folder.glob("*/SKILL.md")]):
                try:
                    skill = parse_skill_file(path)
                except (OSError, ValueError) as exc:
                    problems.append(str(exc))
                    continue
                skills[skill.name] = skill
    return skills, problems
