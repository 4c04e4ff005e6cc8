// The Function App: a Linux container (Functions Python 3.11 base image + postgresql-client, see the
// Dockerfile) on an Elastic Premium plan, with a user-assigned managed identity granted its roles before the
// app exists (identity.bicep), VNet integration, and app settings that give every setting the code reads
// (continuity.kernel.settings.DEFAULTS); secret settings are Key Vault references resolved with that identity.
param location string
param planName string
param appName string

@description('Resource id and client id of the app\'s user-assigned identity (identity.bicep), already granted its roles.')
param identityId string
param identityClientId string

@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param planSku string = 'EP1'

@minValue(1)
@maxValue(20)
param maximumElasticWorkerCount int = 4

@description('Login server of the container registry, e.g. myregistry.azurecr.io.')
param registryLoginServer string

@description('Repository and tag of the app image in that registry.')
param image string = 'continuity-functions:latest'

@description('The Functions host storage account (AzureWebJobsStorage and the Durable task hub).')
param hostStorageAccountName string

@description('The backups storage account.')
param backupStorageAccountName string

@description('Whether the backups account still allows shared keys (connection string in Key Vault).')
param backupStorageSharedKey bool

param appInsightsName string
param vaultUri string

@description('Key Vault secret names the settings reference.')
param storageConnectionSecretName string = 'storage-connection'
param controlDsnSecretName string = 'control-dsn'
param eventGridTopicKeySecretName string = 'eventgrid-topic-key'

param outgoingTopicEndpoint string
param functionsSubnetId string

param postgresVersion string = '16'
param postgresAdminLogin string

param tenantsFile string = '/home/site/wwwroot/config/tenants.yaml'
param backupContainer string = 'backups'
param attachmentContainer string = 'attachments'
param evidenceContainer string = 'evidence'
param nightlySchedule string = '0 0 2 * * *'
param catalogReconcileSchedule string = '0 */15 * * * *'
param retentionSchedule string = '0 30 3 * * *'
@description('NCRONTAB of the backup timer: dumps and base backups due by tier, and the recovery chain check')
param backupSchedule string = '0 */5 * * * *'
param nightlyParallelism int = 2
param approvalWindowMinutes int = 30
param incidentRetryAttempts int = 3
param incidentFirstRetrySeconds int = 30

@description('Isolated subnet of point-in-time restore validation; empty refuses it. Public-access sources: where the restored server gets its private endpoint. VNet-integrated sources: a subnet delegated to Microsoft.DBforPostgreSQL/flexibleServers.')
param pitrSubnetId string = ''
@description('Private DNS zone of the restored servers: privatelink.postgres.database.azure.com for public-access sources, a <name>.postgres.database.azure.com zone for VNet-integrated ones.')
param pitrDnsZoneId string = ''
param pitrPollSeconds int = 30
param pitrTimeoutMinutes int = 60

@allowed([
  'read-only'
  'stop'
])
param failoverFenceMode string = 'read-only'
param maxRequestBytes int = 1048576

@description('Client id of the Entra ID app registration fronting the API (App Service Authentication); empty = none, callers use function keys and X-Continuity-Key.')
param entraClientId string = ''

param tags object = {}

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'elastic'
  sku: {
    name: planSku
    tier: 'ElasticPremium'
  }
  properties: {
    reserved: true
    maximumElasticWorkerCount: maximumElasticWorkerCount
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostStorageAccountName
}

resource backupStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: backupStorageAccountName
}

resource site 'Microsoft.Web/sites@2023-12-01' = {
  name: appName
  location: location
  tags: tags
  kind: 'functionapp,linux,container'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    virtualNetworkSubnetId: functionsSubnetId
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      linuxFxVersion: 'DOCKER|${registryLoginServer}/${image}'
      acrUseManagedIdentityCreds: true
      acrUserManagedIdentityID: identityClientId
      vnetRouteAllEnabled: true
      // Host storage (the Durable task hub) is reachable only from the Functions subnet: the scale controller
      // cannot see those triggers, so the runtime must report its own scale needs or the app never grows past
      // its prewarmed instances (Microsoft Learn: Functions networking options, virtual network triggers).
      functionsRuntimeScaleMonitoringEnabled: true
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      healthCheckPath: '/api/health'
      minimumElasticInstanceCount: 1
      functionAppScaleLimit: maximumElasticWorkerCount
    }
  }
}

var secretUri = '${vaultUri}secrets/'

// Without shared keys the connection string names only the endpoint; the adapter then needs the identity.
var storageConnection = backupStorageSharedKey ? '@Microsoft.KeyVault(SecretUri=${secretUri}${storageConnectionSecretName})' : 'BlobEndpoint=${backupStorage.properties.primaryEndpoints.blob}'

resource appSettings 'Microsoft.Web/sites/config@2023-12-01' = {
  parent: site
  name: 'appsettings'
  properties: {
    // Functions host
    FUNCTIONS_EXTENSION_VERSION: '~4'
    FUNCTIONS_WORKER_RUNTIME: 'python'
    WEBSITES_ENABLE_APP_SERVICE_STORAGE: 'false'
    DOCKER_REGISTRY_SERVER_URL: 'https://${registryLoginServer}'
    // Identity-based host storage: shared keys are off on that account.
    AzureWebJobsStorage__accountName: hostStorage.name
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    // The identity azure-identity's DefaultAzureCredential uses in the app (ARM, Key Vault, Event Grid).
    AZURE_CLIENT_ID: identityClientId
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
    // Secrets: Key Vault references, resolved with the app's managed identity.
    CONTINUITY_STORAGE_CONNECTION: storageConnection
    CONTINUITY_CONTROL_DSN: '@Microsoft.KeyVault(SecretUri=${secretUri}${controlDsnSecretName})'
    CONTINUITY_EVENTGRID_TOPIC_KEY: '@Microsoft.KeyVault(SecretUri=${secretUri}${eventGridTopicKeySecretName})'
    // Azure endpoints
    CONTINUITY_KEYVAULT_URL: vaultUri
    CONTINUITY_EVENTGRID_TOPIC_ENDPOINT: outgoingTopicEndpoint
    CONTINUITY_PG_SUPERUSER: postgresAdminLogin
    PG_BIN: '/usr/lib/postgresql/${postgresVersion}/bin'
    // Behaviour
    CONTINUITY_TENANTS_FILE: tenantsFile
    CONTINUITY_LOCAL_DIR: '/tmp/continuity'
    CONTINUITY_BACKUP_CONTAINER: backupContainer
    CONTINUITY_ATTACHMENT_CONTAINER: attachmentContainer
    CONTINUITY_EVIDENCE_CONTAINER: evidenceContainer
    CONTINUITY_WAL_CONTAINER: 'wal'
    CONTINUITY_ATTACHMENT_KEEP_CONTAINER: 'attachments-kept'
    CONTINUITY_ARCHIVE_TIMEOUT_SECONDS: '60'
    // The Function App's own virtualenv holds barman[azure] (requirements-barman.txt).
    CONTINUITY_BARMAN_BIN: ''
    CONTINUITY_NIGHTLY_SCHEDULE: nightlySchedule
    CONTINUITY_CATALOG_RECONCILE_SCHEDULE: catalogReconcileSchedule
    CONTINUITY_RETENTION_SCHEDULE: retentionSchedule
    CONTINUITY_BACKUP_SCHEDULE: backupSchedule
    CONTINUITY_NIGHTLY_PARALLELISM: string(nightlyParallelism)
    CONTINUITY_APPROVAL_WINDOW_MINUTES: string(approvalWindowMinutes)
    CONTINUITY_INCIDENT_RETRY_ATTEMPTS: string(incidentRetryAttempts)
    CONTINUITY_INCIDENT_FIRST_RETRY_SECONDS: string(incidentFirstRetrySeconds)
    CONTINUITY_FAILOVER_FENCE_MODE: failoverFenceMode
    CONTINUITY_PITR_SUBNET_ID: pitrSubnetId
    CONTINUITY_PITR_DNS_ZONE_ID: pitrDnsZoneId
    CONTINUITY_PITR_POLL_SECONDS: string(pitrPollSeconds)
    CONTINUITY_PITR_TIMEOUT_MINUTES: string(pitrTimeoutMinutes)
    // Fault injection for drills only: empty in every real deployment.
    CONTINUITY_FAILOVER_STEP_PAUSE: ''
    CONTINUITY_MAX_REQUEST_BYTES: string(maxRequestBytes)
    // Trust X-MS-CLIENT-PRINCIPAL only when App Service Authentication fronts the app.
    CONTINUITY_PLATFORM_AUTH: empty(entraClientId) ? 'false' : 'true'
    // Local API keys stay off behind platform authentication: every caller is an Entra ID principal (oid + tid).
    CONTINUITY_LOCAL_USERS_WITH_PLATFORM_AUTH: 'false'
    // Local stack and devhost only: inert in Azure, given their documented defaults so every key is set.
    CONTINUITY_PRIMARY_PORT: '15432'
    CONTINUITY_REPLICA_PORT: '15433'
    CONTINUITY_CONTROL_PORT: '15434'
    CONTINUITY_SANDBOX_PORT: '15435'
    CONTINUITY_AZURITE_BLOB_PORT: '10000'
    CONTINUITY_AZURITE_QUEUE_PORT: '10001'
    CONTINUITY_AZURITE_TABLE_PORT: '10002'
    CONTINUITY_DEVHOST_PORT: '7071'
    CONTINUITY_DEVHOST_APP: 'function_app:app'
    CONTINUITY_DEVHOST_MASTER_KEY: ''
    CONTINUITY_DEVHOST_FUNCTION_KEY: ''
    CONTINUITY_DEVHOST_EVENTGRID_KEY: ''
    CONTINUITY_DEVHOST_WATCHED_CONTAINERS: backupContainer
    CONTINUITY_DEVHOST_BLOB_POLL_SECONDS: '2'
    CONTINUITY_DEVHOST_SUBSCRIPTIONS: ''
    CONTINUITY_PG_OS_USER: 'continuity-pg'
  }
}

// App Service Authentication: Entra ID signs callers in; health and the Event Grid webhook stay reachable
// (Event Grid authenticates with the extension's system key).
resource auth 'Microsoft.Web/sites/config@2023-12-01' = if (!empty(entraClientId)) {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/api/health'
        // Event Grid's documented webhook path (it cannot sign in); the lower-case form too, as clients send it.
        '/runtime/webhooks/EventGrid'
        '/runtime/webhooks/eventgrid'
      ]
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: entraClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${subscription().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${entraClientId}'
          ]
        }
      }
    }
  }
}

output appId string = site.id
output appName string = site.name
output defaultHostName string = site.properties.defaultHostName
