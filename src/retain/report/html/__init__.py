"""``retain report DIR``: a run, comparison, task-sequence or merge-search folder rendered into
one self-contained ``DIR/report.html`` (and a run's or comparison's charts as PNG files in
``DIR/figures/``). One module per page kind (``run``, ``comparison``, ``failed``, ``sequence``,
``search``) over ``helpers``; ``folder`` reads DIR, ``page`` picks the page and writes it.
Everything comes from the folder's files; every piece of untrusted text is escaped.
"""

from retain.report.html.folder import Folder, Run, load_folder
from retain.report.html.page import REPORT_FILE, build_report, make_figures, render
from retain.report.html.run_sections import SECTIONS

__all__ = ["Folder", "REPORT_FILE", "Run", "SECTIONS", "build_report", "load_folder",
           "make_figures", "render"]
