terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 8.x changes guest_accelerator semantics (count = 0 removes GPUs); stay on 7.x.
      version = "~> 7.0"
    }
  }
}
