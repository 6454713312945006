"""No code path reads pickles or runs user strings: a scan of everything the project ships."""

import re

from conftest import ROOT

FORBIDDEN = {
    r"(?<![\w.])eval\(": "eval of a string",
    r"(?<![\w.])exec\(": "exec of a string",
    r"pickle\.loads?\(": "pickle",
    r"yaml\.(?:unsafe_)?load\(": "yaml.load without safe_load",
    r"allow_pickle\s*=\s*True": "numpy pickles",
}


def test_no_pickle_eval_or_unsafe_yaml_in_the_code():
    offenders = []
    for path in sorted([*ROOT.glob("cascade/**/*.py"), *ROOT.glob("train/*.py"), *ROOT.glob("eval/*.py")]):
        text = path.read_text()
        for pattern, what in FORBIDDEN.items():
            offenders += [f"{path.relative_to(ROOT)}: {what}" for _ in re.finditer(pattern, text)]
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in call.group(1):
                offenders.append(f"{path.relative_to(ROOT)}: torch.load without weights_only=True")
    assert not offenders, offenders
