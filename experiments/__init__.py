"""The paper's section 4.2 studies, one module each: `python -m experiments.<study> --dataset epilepsy --quick`."""
