"""The words a check's verdict is written in, shared without torch.

The checks (``course_lib.checks``, which need torch) write verdicts; the
instructor tools (building exercises, grading) read them and must not need
torch to do so. Both take the vocabulary from here.
"""

# Notebook outputs of a check carry its summary under this MIME type, so a
# grader can read verdicts from an executed notebook without parsing text.
# JupyterLab has no renderer for it and simply shows the text or HTML.
SUMMARY_MIME_TYPE = "application/vnd.course-lib.check+json"

PASSED = "passed"
FAILED = "failed"
NOT_IMPLEMENTED = "not implemented"  # every case raised NotImplementedError: the exercise cell is untouched

# The status of a check's verdict, as ``CheckResult.status`` and its summary give it.
STATUSES = (PASSED, FAILED, NOT_IMPLEMENTED)
