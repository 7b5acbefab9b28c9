"""`python -m docgen`: rewrite the generated parts of the reference pages in docs/."""

from docgen.pages import write_all

if __name__ == "__main__":
    for path in write_all():
        print(f"wrote {path}")
