"""The `course` command and what instructors use; learners never need to read this.

    cli             the `course` command line (also ``python -m course_lib``)
    doctor          checks that the environment can run the course
    exercises       writes exercises/ from solutions/ and keeps them in sync
    notebook_cells  which exercise a cell is and which check it calls (for exercises and grading)
    grading         grades a class's exercise notebooks in a sandbox
    bench           the performance and quality figures of `course bench`

``exercises`` and ``notebook_cells`` never import torch: building exercises
only reads and writes notebooks.
"""
