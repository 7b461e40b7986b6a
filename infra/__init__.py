"""ztml Pulumi program."""
