terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 7.41 is the release whose schema the module is checked against offline (any later 7.x
      # only adds). 8.0 changed guest_accelerator removal (a block left out or count = 0 now
      # removes GPUs), which has not been checked against machine types that carry their GPUs.
      version = "~> 7.41"
    }
  }
}
