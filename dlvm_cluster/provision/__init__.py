"""From a spec to machines: render the Terraform root module, run Terraform, read its outputs."""
