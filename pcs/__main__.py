from pcs._signals import die_with_parent

die_with_parent()  # a pcs process started by pcs ends with it

from pcs.cli import main  # noqa: E402

main()
