// The continuity control plane in one resource group: the Function App (Linux container on Elastic
// Premium, managed identity), backups storage (versioned, version-level WORM on backups and evidence,
// lifecycle tiering by service tier), Event Grid (BlobCreated system topic, outgoing and backup-jobs
// custom topics, dead-lettering), Key Vault (RBAC, purge protection, private only), PostgreSQL Flexible
// Servers (geo-redundant primary, replica in the second region, isolated sandbox), the VNets, Application
// Insights + Log Analytics, and least-privilege roles for the app's identity.
// Deploy: infra/README.md.
targetScope = 'resourceGroup'

@allowed([
  'dev'
  'prod'
])
param environmentName string

@description('Primary region (tenant databases, the app, storage).')
param location string = resourceGroup().location

@description('Secondary region: the PostgreSQL read replica that a regional failover promotes.')
param secondaryLocation string

@description('Short prefix of resource names (lower-case letters and digits).')
@minLength(2)
@maxLength(10)
param namePrefix string = 'cont'

@description('Service tiers of config/tenants.yaml with their retention tier ages (days); one lifecycle rule pair each. The default is continuity.kernel.tenants.RetentionPolicy\'s defaults.')
param retentionTiers array = [
  {
    name: 'default'
    coolAfterDays: 7
    coldAfterDays: 30
    archiveAfterDays: 180
    validateBeforeArchive: true
  }
]

@description('Default version-level retention on the backups container: the shortest immutable_days of any tier.')
@minValue(1)
param backupImmutableDays int = 7

@description('Default version-level retention on the evidence container (7 years).')
@minValue(1)
param evidenceImmutableDays int = 2555

@description('Replication of the backups account: geo-redundant and archive-capable (GRS or RA-GRS; see modules/storage.bicep).')
@allowed([
  'Standard_GRS'
  'Standard_RAGRS'
])
param backupStorageSku string = 'Standard_RAGRS'

@description('True once an operator locked the backups and evidence immutability policies (infra/README.md): redeploys then leave them alone.')
param immutabilityPolicyLocked bool = false

@description('The blob adapter connects with a connection string (account key, kept in Key Vault). Set false once it authenticates with the managed identity; the app then gets BlobEndpoint=... only.')
param backupStorageSharedKey bool = true

param postgresVersion string = '16'
param postgresAdminLogin string = 'continuity'

@secure()
param postgresAdminPassword string

@secure()
param sandboxAdminPassword string

param postgresSku string = 'Standard_D2ds_v5'
param postgresTier string = 'GeneralPurpose'
param postgresStorageSizeGB int = 128
param postgresHighAvailability string = 'ZoneRedundant'
param sandboxSku string = 'Standard_B2ms'
param sandboxTier string = 'Burstable'

param functionPlanSku string = 'EP1'
param functionMaxWorkers int = 4

@description('Repository:tag of the app image in the registry (built from the Dockerfile beside function_app.py).')
param image string = 'continuity-functions:latest'

@description('Create the Event Grid subscriptions to the app. False on the first deploy: Event Grid needs the published app\'s functions to exist.')
param subscribeEvents bool = false

param blobCreatedFunctionName string = 'catalog_blob_created'
param backupFailedFunctionName string = 'backup_failed'

@description('Entra ID app registration fronting the HTTP API (App Service Authentication); empty = none.')
param entraClientId string = ''

param nightlySchedule string = '0 0 2 * * *'
param nightlyParallelism int = 2
param approvalWindowMinutes int = 30

@description('Alert receivers: email [{ name, emailAddress }] and webhook [{ name, serviceUri }] (an on-call tool)')
param alertEmailReceivers array = []
param alertWebhookReceivers array = []
@description('Replication lag, in seconds, above which the replication alert fires')
param replicationLagAlertSeconds int = 300

param primaryAddressPrefix string = '10.40.0.0/16'
param secondaryAddressPrefix string = '10.41.0.0/16'

param tags object = {
  app: 'continuity'
  environment: environmentName
}

var suffix = uniqueString(resourceGroup().id, environmentName)
var base = '${namePrefix}-${environmentName}'
var backupContainer = 'backups'
var attachmentContainer = 'attachments'
var evidenceContainer = 'evidence'
var deadLetterContainer = 'eventgrid-deadletter'
var names = {
  primaryVnet: '${base}-vnet-${location}'
  secondaryVnet: '${base}-vnet-${secondaryLocation}'
  workspace: '${base}-logs'
  appInsights: '${base}-appi'
  hostStorage: take('${namePrefix}host${suffix}', 24)
  backupStorage: take('${namePrefix}bak${suffix}', 24)
  vault: take('${namePrefix}-kv-${suffix}', 24)
  registry: take('${namePrefix}acr${suffix}', 50)
  primaryServer: '${base}-pg-${suffix}'
  replicaServer: '${base}-pg-replica-${suffix}'
  sandboxServer: '${base}-pg-sandbox-${suffix}'
  systemTopic: '${base}-backups-events'
  outgoingTopic: '${base}-events-${suffix}'
  backupJobsTopic: '${base}-backup-jobs-${suffix}'
  plan: '${base}-plan'
  app: '${base}-func-${suffix}'
  identity: '${base}-func-id-${suffix}'
}

module primaryNetwork 'modules/network.bicep' = {
  name: 'network-primary'
  params: {
    location: location
    vnetName: names.primaryVnet
    addressPrefix: primaryAddressPrefix
    privateEndpointsPrefix: cidrSubnet(primaryAddressPrefix, 24, 0)
    functionsPrefix: cidrSubnet(primaryAddressPrefix, 24, 1)
    sandboxPrefix: cidrSubnet(primaryAddressPrefix, 24, 2)
    tags: tags
  }
}

module secondaryNetwork 'modules/network.bicep' = {
  name: 'network-secondary'
  params: {
    location: secondaryLocation
    vnetName: names.secondaryVnet
    addressPrefix: secondaryAddressPrefix
    privateEndpointsPrefix: cidrSubnet(secondaryAddressPrefix, 24, 0)
    tags: tags
  }
}

module peering 'modules/peering.bicep' = {
  name: 'network-peering'
  params: {
    primaryVnetName: primaryNetwork.outputs.vnetName
    secondaryVnetName: secondaryNetwork.outputs.vnetName
  }
}

module postgresZone 'modules/private-dns-zone.bicep' = {
  name: 'dns-postgres'
  params: {
    zoneName: 'privatelink.postgres.database.azure.com'
    vnetIds: [
      primaryNetwork.outputs.vnetId
      secondaryNetwork.outputs.vnetId
    ]
    tags: tags
  }
}

module vaultZone 'modules/private-dns-zone.bicep' = {
  name: 'dns-vault'
  params: {
    zoneName: 'privatelink.vaultcore.azure.net'
    vnetIds: [
      primaryNetwork.outputs.vnetId
      secondaryNetwork.outputs.vnetId
    ]
    tags: tags
  }
}

module sandboxZone 'modules/private-dns-zone.bicep' = {
  name: 'dns-sandbox'
  params: {
    zoneName: '${names.sandboxServer}.private.postgres.database.azure.com'
    vnetIds: [
      primaryNetwork.outputs.vnetId
    ]
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    workspaceName: names.workspace
    appInsightsName: names.appInsights
    tags: tags
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    appInsightsId: monitoring.outputs.appInsightsId
    actionGroupName: '${base}-oncall'
    emailReceivers: alertEmailReceivers
    webhookReceivers: alertWebhookReceivers
    replicationLagSeconds: replicationLagAlertSeconds
    tags: tags
  }
}

module hostStorage 'modules/host-storage.bicep' = {
  name: 'host-storage'
  params: {
    location: location
    accountName: names.hostStorage
    functionsSubnetId: primaryNetwork.outputs.functionsSubnetId
    tags: tags
  }
}

module backupStorage 'modules/storage.bicep' = {
  name: 'backup-storage'
  params: {
    location: location
    accountName: names.backupStorage
    skuName: backupStorageSku
    backupContainer: backupContainer
    attachmentContainer: attachmentContainer
    evidenceContainer: evidenceContainer
    deadLetterContainer: deadLetterContainer
    backupImmutableDays: backupImmutableDays
    evidenceImmutableDays: evidenceImmutableDays
    retentionTiers: retentionTiers
    allowSharedKeyAccess: backupStorageSharedKey
    immutabilityPolicyLocked: immutabilityPolicyLocked
    functionsSubnetId: primaryNetwork.outputs.functionsSubnetId
    tags: tags
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'key-vault'
  params: {
    location: location
    vaultName: names.vault
    tags: tags
  }
}

module vaultEndpoint 'modules/private-endpoint.bicep' = {
  name: 'pe-vault'
  params: {
    name: '${names.vault}-pe'
    location: location
    subnetId: primaryNetwork.outputs.privateEndpointsSubnetId
    targetResourceId: keyVault.outputs.vaultId
    groupId: 'vault'
    privateDnsZoneId: vaultZone.outputs.zoneId
    tags: tags
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  params: {
    location: location
    registryName: names.registry
    tags: tags
  }
}

module postgres 'modules/postgres.bicep' = {
  name: 'postgres'
  params: {
    location: location
    secondaryLocation: secondaryLocation
    primaryName: names.primaryServer
    replicaName: names.replicaServer
    sandboxName: names.sandboxServer
    postgresVersion: postgresVersion
    adminLogin: postgresAdminLogin
    adminPassword: postgresAdminPassword
    sandboxAdminPassword: sandboxAdminPassword
    serverSku: postgresSku
    serverTier: postgresTier
    storageSizeGB: postgresStorageSizeGB
    highAvailability: postgresHighAvailability
    sandboxSku: sandboxSku
    sandboxTier: sandboxTier
    sandboxSubnetId: primaryNetwork.outputs.sandboxSubnetId
    sandboxDnsZoneId: sandboxZone.outputs.zoneId
    tags: tags
  }
}

module primaryEndpoint 'modules/private-endpoint.bicep' = {
  name: 'pe-postgres-primary'
  params: {
    name: '${names.primaryServer}-pe'
    location: location
    subnetId: primaryNetwork.outputs.privateEndpointsSubnetId
    targetResourceId: postgres.outputs.primaryId
    groupId: 'postgresqlServer'
    privateDnsZoneId: postgresZone.outputs.zoneId
    tags: tags
  }
}

module replicaEndpoint 'modules/private-endpoint.bicep' = {
  name: 'pe-postgres-replica'
  params: {
    name: '${names.replicaServer}-pe'
    location: secondaryLocation
    subnetId: secondaryNetwork.outputs.privateEndpointsSubnetId
    targetResourceId: postgres.outputs.replicaId
    groupId: 'postgresqlServer'
    privateDnsZoneId: postgresZone.outputs.zoneId
    tags: tags
  }
}

module eventGrid 'modules/eventgrid.bicep' = {
  name: 'event-grid'
  params: {
    location: location
    systemTopicName: names.systemTopic
    outgoingTopicName: names.outgoingTopic
    backupJobsTopicName: names.backupJobsTopic
    storageAccountName: backupStorage.outputs.accountName
    deadLetterContainer: backupStorage.outputs.deadLetterContainer
    tags: tags
  }
}

module secrets 'modules/secrets.bicep' = {
  name: 'secrets'
  params: {
    vaultName: keyVault.outputs.vaultName
    backupStorageAccountName: backupStorage.outputs.accountName
    backupStorageSharedKey: backupStorageSharedKey
    outgoingTopicName: eventGrid.outputs.outgoingTopicName
    controlHost: postgres.outputs.primaryHost
    controlDatabase: postgres.outputs.controlDatabase
    postgresAdminLogin: postgresAdminLogin
    postgresAdminPassword: postgresAdminPassword
  }
}

module appIdentity 'modules/identity.bicep' = {
  name: 'app-identity'
  params: {
    location: location
    identityName: names.identity
    tags: tags
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'function-app'
  params: {
    location: location
    planName: names.plan
    appName: names.app
    identityId: appIdentity.outputs.identityId
    identityClientId: appIdentity.outputs.clientId
    planSku: functionPlanSku
    maximumElasticWorkerCount: functionMaxWorkers
    registryLoginServer: registry.outputs.loginServer
    image: image
    hostStorageAccountName: hostStorage.outputs.accountName
    backupStorageAccountName: backupStorage.outputs.accountName
    backupStorageSharedKey: backupStorageSharedKey
    appInsightsName: monitoring.outputs.appInsightsName
    vaultUri: keyVault.outputs.vaultUri
    outgoingTopicEndpoint: eventGrid.outputs.outgoingTopicEndpoint
    functionsSubnetId: primaryNetwork.outputs.functionsSubnetId
    // Point-in-time-restore validation: the primaries are public-access servers (reached through private
    // endpoints), and Azure restores a public-access source only to public access ("You can't perform PITR across
    // public and private access", Microsoft Learn, Flexible Server backup and restore, "Restore and networking").
    // So the restored server gets public access disabled and a private endpoint of its own, made by the app in
    // the private-endpoints subnet and registered in the privatelink zone, like the primary's.
    pitrSubnetId: primaryNetwork.outputs.privateEndpointsSubnetId
    pitrDnsZoneId: postgresZone.outputs.zoneId
    postgresVersion: postgresVersion
    postgresAdminLogin: postgresAdminLogin
    backupContainer: backupContainer
    attachmentContainer: attachmentContainer
    evidenceContainer: evidenceContainer
    nightlySchedule: nightlySchedule
    nightlyParallelism: nightlyParallelism
    approvalWindowMinutes: approvalWindowMinutes
    entraClientId: entraClientId
    tags: tags
  }
  dependsOn: [
    secrets
    vaultEndpoint
    roles // the first start resolves Key Vault references, pulls the image and opens host storage
  ]
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    principalId: appIdentity.outputs.principalId
    principalName: appIdentity.outputs.identityName
    backupStorageAccountName: backupStorage.outputs.accountName
    dataContainers: [
      backupContainer
      attachmentContainer
      evidenceContainer
    ]
    hostStorageAccountName: hostStorage.outputs.accountName
    vaultName: keyVault.outputs.vaultName
    outgoingTopicName: eventGrid.outputs.outgoingTopicName
    registryName: registry.outputs.registryName
    primaryServerName: postgres.outputs.primaryName
    sandboxServerName: postgres.outputs.sandboxName
  }
}

module subscriptions 'modules/eventgrid-subscriptions.bicep' = if (subscribeEvents) {
  name: 'event-grid-subscriptions'
  params: {
    systemTopicName: names.systemTopic
    backupJobsTopicName: names.backupJobsTopic
    functionAppName: functionApp.outputs.appName
    storageAccountName: backupStorage.outputs.accountName
    backupContainer: backupContainer
    deadLetterContainer: deadLetterContainer
    blobCreatedFunctionName: blobCreatedFunctionName
    backupFailedFunctionName: backupFailedFunctionName
  }
  dependsOn: [
    eventGrid
    roles
  ]
}

output functionAppName string = functionApp.outputs.appName
output functionAppHostName string = functionApp.outputs.defaultHostName
output functionAppPrincipalId string = appIdentity.outputs.principalId
output registryLoginServer string = registry.outputs.loginServer
output registryName string = registry.outputs.registryName
output backupStorageAccountName string = backupStorage.outputs.accountName
output vaultName string = keyVault.outputs.vaultName
output outgoingTopicEndpoint string = eventGrid.outputs.outgoingTopicEndpoint
output backupJobsTopicEndpoint string = eventGrid.outputs.backupJobsTopicEndpoint
output primaryServerHost string = postgres.outputs.primaryHost
output replicaServerHost string = postgres.outputs.replicaHost
output sandboxServerHost string = postgres.outputs.sandboxHost
