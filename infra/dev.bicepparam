// dev: deploy with
//   az deployment group create -g <resource group> -f infra/main.bicep -p infra/dev.bicepparam
// Secrets come from the deployer's environment, never from this file.
using 'main.bicep'

param environmentName = 'dev'
param secondaryLocation = 'northeurope'
param namePrefix = 'cont'

// The service tiers of config/tenants.yaml and their retention tier ages (tests/unit/test_infra.py keeps
// them equal). Backups carry the blob index tags tier=<service tier> and status=<catalog status>.
param retentionTiers = [
  {
    name: 'gold'
    coolAfterDays: 7
    coldAfterDays: 30
    archiveAfterDays: 90
    validateBeforeArchive: true
  }
  {
    name: 'silver'
    coolAfterDays: 14
    coldAfterDays: 60
    archiveAfterDays: 180
    validateBeforeArchive: true
  }
  {
    name: 'bronze'
    coolAfterDays: 30
    coldAfterDays: 90
    archiveAfterDays: 90
    validateBeforeArchive: false
  }
]

// The shortest immutable_days of the tiers above (bronze): a longer container default would lock
// bronze backups past their retention. Longer tiers get per-version retention from the app.
param backupImmutableDays = 7
param evidenceImmutableDays = 2555
param backupStorageSku = 'Standard_RAGRS'
// Set true after locking the immutability policies (infra/README.md): redeploys then leave them alone.
param immutabilityPolicyLocked = false
param backupStorageSharedKey = true

param postgresVersion = '16'
param postgresAdminLogin = 'continuity'
param postgresAdminPassword = readEnvironmentVariable('CONTINUITY_PG_ADMIN_PASSWORD')
param sandboxAdminPassword = readEnvironmentVariable('CONTINUITY_PG_SANDBOX_PASSWORD')
param postgresSku = 'Standard_D2ds_v5'
param postgresHighAvailability = 'Disabled'

param functionPlanSku = 'EP1'
param functionMaxWorkers = 2
param image = readEnvironmentVariable('CONTINUITY_IMAGE', 'continuity-functions:latest')

// First deploy: false. After the image is published: CONTINUITY_SUBSCRIBE_EVENTS=true, deploy again.
param subscribeEvents = bool(readEnvironmentVariable('CONTINUITY_SUBSCRIBE_EVENTS', 'false'))
param entraClientId = readEnvironmentVariable('CONTINUITY_ENTRA_CLIENT_ID', '')

param primaryAddressPrefix = '10.40.0.0/16'
param secondaryAddressPrefix = '10.41.0.0/16'
